# make test   -- the test command (sets up first; fails when no tests are collected: pytest exits 5 then): the whole
#                suite on requirements.lock, then on the oldest supported set and on a newer in-range transformers
#                release when there is one (scripts/test_matrix.sh)
# make app    -- the web demo (app.py, Gradio) on the demo's checkpoint: http://127.0.0.1:7860 (MODEL=dir for another)
# make lock   -- refresh requirements.lock / requirements-oldest.lock from pyproject.toml's ranges (scripts/lock.py)
# make test-transformers VERSION=x.y.z -- the suite with another transformers release (e.g. a new one)
# make test-gpu-image -- the suite on the CPU with the lent GPU machine's releases (torch 2.11, transformers 5.17, ...)
# make test-python PYTHON_BIN=python3.13 -- the suite with the lock's releases on another Python
# make demo   -- the whole offline demo (make demo-quick for the short variant)
# make setup  -- venv + system packages + cached base LLM and real clips (scripts/setup.sh); make assets adds the corpora
PY := .venv/bin/python
export PYTHONPATH := .:tests

.PHONY: setup setup-tests assets test test-transformers test-gpu-image test-python lock app demo demo-quick bench grid clean distclean

setup:
	bash scripts/setup.sh

setup-tests:
	MDU_SKIP_ASSETS=1 bash scripts/setup.sh

assets: setup  # the demo's espeak corpora too (the demo builds them on demand)
	$(PY) demo.py --quick --prepare_only
	$(PY) demo.py --prepare_only

test: setup-tests
	$(PY) -m pytest tests -q
	bash scripts/test_matrix.sh

test-transformers: setup-tests
	bash scripts/test_matrix.sh transformers $(VERSION)

test-gpu-image: setup-tests  # GPU_IMAGE_PYTHON=path/to/python3.12 to match the machine's Python
	bash scripts/test_matrix.sh gpu-image

test-python: setup-tests  # PYTHON_BIN=python3.13: the suite with the lock's releases on that Python
	bash scripts/test_matrix.sh python $(PYTHON_BIN)

lock: setup-tests
	$(PY) scripts/lock.py

app: setup
	$(PY) app.py $(if $(MODEL),--model $(MODEL),)

demo: setup
	$(PY) demo.py

demo-quick: setup
	$(PY) demo.py --quick

bench: setup
	$(PY) -m bench.run

grid: setup
	$(PY) grid.py

clean:
	rm -rf outputs runs .pytest_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf cache .venv .venvs
