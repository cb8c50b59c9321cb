# The two commands in README.md: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup demo demo-clean test lint sanity unit integration build clean

setup:
	bash scripts/setup.sh

demo: setup
	$(ENV) python scripts/demo.py

demo-clean:
	$(ENV) python scripts/demo.py --clean

# scripts/test.sh sources scripts/env.sh itself; CI's .ci/run calls `make test`.
test: setup
	bash scripts/test.sh

lint sanity unit integration build: setup
	bash scripts/test.sh $@

clean: demo-clean
	rm -rf build tests/output .pytest_cache .ruff_cache
