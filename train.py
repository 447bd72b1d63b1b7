"""Train and evaluate Shap-CA with the transformers Trainer (Accelerate underneath).

    shapca-train twitter2015-minilm [--key value ...]                           # installed: console script
    python train.py configs/twitter2015-minilm.yaml [--key value ...]           # 1 process (CPU or 1 GPU)
    accelerate launch train.py configs/twitter2015-bert-resnet152.yaml          # all local GPUs
    torchrun --nproc_per_node 2 train.py configs/twitter2015-minilm.yaml        # 2 CPU processes

A thin entry point over `shapca_training.run.main` (docstring there).
"""

from pathlib import Path

from shapca_training.arguments import parse_arguments, resolve_path  # noqa: F401 - used by callers
from shapca_training.run import main, public_model_name  # noqa: F401

ROOT = Path(__file__).resolve().parent

if __name__ == "__main__":
    main()
