#!/usr/bin/env bash
# The test pipeline behind `make test` and CI (.ci/run): every check the collection has to pass.
#
#   scripts/test.sh [STAGE...]      stages: lint sanity unit integration build
#
# Without arguments every stage runs, in that order. A failing check does not stop the run, so
# one CI log shows every problem; the exit status is non-zero if any check failed, and a summary
# with each check's verdict and duration closes the output. Needs `make setup` (scripts/setup.sh)
# to have run; `make test` does that first.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/env.sh
source scripts/env.sh

all_stages=(lint sanity unit integration build)
unit_tests=tests/unit
# ansible-test needs the collection at .../ansible_collections/<namespace>/<name>.
sanity_copy=build/sanity/ansible_collections/zkrollout/dc
dist=build/dist

summary=()
failed=0

banner() { printf '\n===== %s =====\n' "$*"; }
complain() { printf 'test.sh: %s\n' "$*" >&2; }

# Runs one check with errexit in force (a bare `set -e` is ignored inside `cmd || ...`), records
# its verdict and duration, and lets the pipeline go on to the next check.
check() {
  local name=$1 started=$SECONDS status
  shift
  banner "$name"
  set +e
  (set -e; "$@")
  status=$?
  set -e
  local verdict=ok
  if [ "$status" -ne 0 ]; then
    verdict="FAILED (exit $status)"
    failed=1
  fi
  summary+=("$(printf '%-28s %-18s %4ds' "$name" "$verdict" $((SECONDS - started)))")
}

# pyproject.toml's testpaths is the one list of test directories: the unit stage runs
# tests/unit, the integration stage every other directory listed there.
pytest_testpaths() {
  python - <<'EOF'
import tomllib

with open("pyproject.toml", "rb") as config:
    print("\n".join(tomllib.load(config)["tool"]["pytest"]["ini_options"]["testpaths"]))
EOF
}

run_pytest() {
  local status=0
  python -m pytest "$@" || status=$?
  if [ "$status" -eq 5 ]; then
    complain "pytest collected no tests from: $*; a run that tests nothing must not pass"
  fi
  return "$status"
}

unit_tests() {
  # Unit tests touch no server: a minute is already a hang.
  run_pytest --timeout=60 "$unit_tests"
}

integration_tests() {
  local dirs=()
  mapfile -t dirs < <(pytest_testpaths | grep -vxF "$unit_tests")
  if [ "${#dirs[@]}" -eq 0 ]; then
    complain "pyproject.toml lists no test directory besides $unit_tests in [tool.pytest.ini_options] testpaths"
    return 1
  fi
  run_pytest "${dirs[@]}"
}

sanity_tests() {
  # ansible-test resolves the physical working directory, so the build/collections symlink is
  # not enough: it gets a copy of exactly what git would commit (tracked plus untracked files
  # that .gitignore does not exclude). The copy is its own git repository because ansible-test
  # lists content through git, and the work tree's git ignores everything under build/.
  local pip_stand_in="$HOME/.ansible/test/cache/get_pip_24_2.py"
  if [ ! -f "$pip_stand_in" ]; then
    complain "ansible-test would download pip's bootstrap script, which this network cannot reach; run 'make setup' to install the stand-in at $pip_stand_in"
    return 1
  fi
  rm -rf build/sanity
  mkdir -p "$sanity_copy"
  git ls-files -z --cached --others --exclude-standard |
    rsync -a --from0 --files-from=- --ignore-missing-args ./ "$sanity_copy/"
  git -C "$sanity_copy" init -q
  # --local: there is no container runtime. Each sanity test still gets its own venv, whose pip
  # comes from the bootstrap stand-in that scripts/setup.sh installs.
  (cd "$sanity_copy" && ansible-test sanity --local --python 3.11)
}

build_collection() {
  rm -rf "$dist"
  mkdir -p "$dist"
  ansible-galaxy collection build --output-path "$dist" .
}

built_tarball() {
  local tarballs=("$dist"/zkrollout-dc-*.tar.gz)
  if [ "${#tarballs[@]}" -ne 1 ] || [ ! -f "${tarballs[0]}" ]; then
    complain "expected exactly one zkrollout-dc-*.tar.gz in $dist, found: ${tarballs[*]}"
    return 1
  fi
  printf '%s\n' "${tarballs[0]}"
}

check_tarball_contents() {
  local tarball
  tarball=$(built_tarball)
  python - "$tarball" <<'EOF'
import sys
import tarfile

# Work-tree leftovers that must never ship: caches, the venv, build output, test results.
TOP_LEVEL = ("tests/output", ".venv", "build", ".ci", ".git")
ANYWHERE = {"__pycache__", ".pytest_cache", ".ruff_cache", ".cache"}
SUFFIXES = (".pyc", ".pyo")

with tarfile.open(sys.argv[1]) as tarball:
    names = tarball.getnames()
stray = [
    name
    for name in names
    if any(name == top or name.startswith(top + "/") for top in TOP_LEVEL)
    or ANYWHERE.intersection(name.split("/"))
    or name.endswith(SUFFIXES)
]
if stray:
    print("%s ships %d file(s) that must not be in a release; extend build_ignore in galaxy.yml:" % (sys.argv[1], len(stray)))
    print("\n".join("  " + name for name in stray))
    sys.exit(1)
print("%s: %d members, none of them work-tree leftovers" % (sys.argv[1], len(names)))
EOF
}

check_installed_docs() {
  local tarball installed
  tarball=$(built_tarball)
  installed=$(mktemp -d)
  # The subshell that runs this check ends right after it, so the trap cleans up either way;
  # the path is expanded now because the local variable is gone when the trap runs.
  # shellcheck disable=SC2064
  trap "rm -rf -- '$installed'" EXIT
  # Only the installed copy may be visible, to the installer too (which otherwise finds the work
  # tree through build/collections and installs nothing): no collection path into the work tree,
  # and no PYTHONPATH entry that ansible would scan for collections.
  (
    cd "$installed"
    unset PYTHONPATH
    export ANSIBLE_COLLECTIONS_PATH=$installed ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
    ansible-galaxy collection install --offline -p "$installed" "$repo/$tarball"
    python - "$installed" <<'EOF'
import json
import os
import subprocess
import sys

installed = os.path.realpath(sys.argv[1])
PLUGIN_TYPES = ("module", "strategy", "inventory", "lookup", "filter")


def ansible_doc_json(*args):
    result = subprocess.run(["ansible-doc", "--json", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit("ansible-doc %s failed with exit %d:\n%s" % (" ".join(args), result.returncode, result.stderr))
    return json.loads(result.stdout)


problems = []
found = {}
for plugin_type in PLUGIN_TYPES:
    names = sorted(ansible_doc_json("-t", plugin_type, "--list", "zkrollout.dc"))
    found[plugin_type] = names
    if not names:
        continue
    docs = ansible_doc_json("-t", plugin_type, *names)
    for name in names:
        doc = (docs.get(name) or {}).get("doc")
        if not doc:
            problems.append("%s %s: ansible-doc returned no documentation" % (plugin_type, name))
        elif not os.path.realpath(doc.get("filename", "")).startswith(installed + os.sep):
            problems.append("%s %s: documented from %s, not from the installed copy" % (plugin_type, name, doc.get("filename")))
for plugin_type, names in found.items():
    print("%-10s %d: %s" % (plugin_type, len(names), " ".join(names) or "none"))
if not found["module"]:
    problems.append("the installed collection lists no module")
if problems:
    sys.exit("\n".join(problems))
EOF
  )
}

stage_lint() {
  check "lint: ruff" ruff check .
  check "lint: ansible-lint" ansible-lint
  check "lint: changelog fragments" antsibull-changelog lint
  check "lint: changelog.yaml" antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml
}
stage_sanity() { check "sanity: ansible-test" sanity_tests; }
stage_unit() { check "unit: pytest" unit_tests; }
stage_integration() { check "integration: pytest" integration_tests; }
stage_build() {
  check "build: galaxy build" build_collection
  check "build: tarball contents" check_tarball_contents
  check "build: install and docs" check_installed_docs
}

stages=("$@")
if [ "${#stages[@]}" -eq 0 ]; then
  stages=("${all_stages[@]}")
fi
for stage in "${stages[@]}"; do
  if [[ " ${all_stages[*]} " != *" $stage "* ]]; then
    complain "unknown stage '$stage'; choose from: ${all_stages[*]}"
    exit 2
  fi
done

if [ ! -x .venv/bin/ansible-test ] || [ ! -e build/collections/ansible_collections/zkrollout/dc ]; then
  complain "the work tree is not set up (no .venv or build/collections): run 'make setup', or 'make test', which runs it first"
  exit 2
fi

for stage in "${stages[@]}"; do
  "stage_$stage"
done

banner "summary"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  printf 'FAILED: see the checks marked above\n'
  exit 1
fi
printf 'all checks passed\n'
