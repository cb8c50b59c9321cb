# shellcheck shell=bash
# Sourced by the Makefile's recipes and scripts/test.sh: the project's venv and collection path, nothing user-wide.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$repo/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$repo/build/collections"
export ANSIBLE_CONFIG="$repo/tests/ansible.cfg"
export PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$repo/build/collections${PYTHONPATH:+:$PYTHONPATH}"
