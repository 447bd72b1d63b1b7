"""The Space's app file: the Shap-CA demo app (`shapca_app/app.py`, console script `shapca-app`).

A Space starts it as `python app.py` with no arguments: the models come from `models.yaml`
beside it (or `$SHAPCA_MODELS`), and it listens on 0.0.0.0:7860 there (`$SPACE_ID` is set).
From a checkout: `python demo/app.py --model outputs/twitter2015-minilm`.
"""

import sys
from pathlib import Path

try:
    from shapca_app.app import main
except ModuleNotFoundError:  # a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from shapca_app.app import main

if __name__ == "__main__":
    main()
