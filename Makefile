# make test   -- the test command (sets up first; fails when no tests are collected: pytest exits 5 then)
# make demo   -- the whole offline demo (make demo-quick for the short variant)
# make setup  -- venv + system packages + cached base LLM and real clips (scripts/setup.sh); make assets adds the corpora
PY := .venv/bin/python
export PYTHONPATH := .:tests

.PHONY: setup setup-tests assets test demo demo-quick bench grid clean distclean

setup:
	bash scripts/setup.sh

setup-tests:
	MDU_SKIP_ASSETS=1 bash scripts/setup.sh

assets: setup  # the demo's espeak corpora too (the demo builds them on demand)
	$(PY) demo.py --quick --prepare_only
	$(PY) demo.py --prepare_only

test: setup-tests
	$(PY) -m pytest tests -q

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
	rm -rf cache .venv
