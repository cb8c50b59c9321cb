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

test: setup
	$(ENV) bash scripts/test.sh

lint: setup
	$(ENV) bash scripts/test.sh lint

sanity: setup
	$(ENV) bash scripts/test.sh sanity

unit: setup
	$(ENV) bash scripts/test.sh unit

integration: setup
	$(ENV) bash scripts/test.sh integration

build: setup
	$(ENV) ansible-galaxy collection build --force --output-path build/dist .

clean: demo-clean
	rm -rf build tests/output .pytest_cache .ruff_cache
