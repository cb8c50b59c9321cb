#!/usr/bin/env bash
# Installs what the demo and the test suite need on a Debian/Ubuntu machine, idempotently:
# apt packages, the Python venv from the pinned requirements, the collection made importable
# as zkrollout.dc, and the pip bootstrap stand-in that ansible-test needs on a closed network.
# Re-running it installs only what is missing. It never touches the user's own Ansible config.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/build"
venv="$repo/.venv"
apt_packages=(zookeeper default-jre-headless openssh-server iproute2 python3-venv rsync shellcheck)

say() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: '$*' needs root; run as root or install sudo" >&2; exit 1
  fi
}

install_apt_packages() {
  local missing=()
  for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    say "apt packages present"
    return
  fi
  say "installing apt packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_venv() {
  local stamp="$venv/.requirements.sha256" want
  want=$(sha256sum "$repo/requirements/requirements.txt" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import kazoo, ansible' 2>/dev/null; then
    say "venv up to date ($venv)"
    return
  fi
  say "building venv $venv from requirements/requirements.txt"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$repo/requirements/requirements.txt"
  echo "$want" >"$stamp"
}

download_host_wheels() {
  # Test hosts in network namespaces have no route to a package index: the agent role installs
  # kazoo, cryptography (release signatures) and prometheus_client (the metrics endpoint) there
  # from this directory, the way an air-gapped site would. The versions are the pinned ones of
  # requirements/requirements.txt.
  local wheels="$build/wheels" package pins=()
  for package in kazoo cryptography cffi pycparser prometheus_client; do
    pins+=("$(grep -i "^$package==" "$repo/requirements/requirements.txt")")
  done
  local stamp="$wheels/.pins" want="${pins[*]}"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  say "downloading the wheels for test hosts into $wheels: ${pins[*]}"
  mkdir -p "$wheels"
  "$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "${pins[@]}"
  echo "$want" >"$stamp"
}

link_collection() {
  # Ansible finds the collection through ANSIBLE_COLLECTIONS_PATH=$build/collections (set by
  # scripts/env.sh), so the checkout is used in place and no user-wide path is changed.
  local link="$build/collections/ansible_collections/zkrollout/dc"
  mkdir -p "$(dirname "$link")"
  if [ "$(readlink "$link" 2>/dev/null)" != "$repo" ]; then
    ln -sfn "$repo" "$link"
    say "linked $link -> $repo"
  fi
}

install_pip_bootstrap_stand_in() {
  # ansible-test bootstraps pip in its sanity venvs from a script it downloads from a host this
  # network cannot reach; this stand-in does the same job with the interpreter's own ensurepip.
  local target="$HOME/.ansible/test/cache/get_pip_24_2.py"
  mkdir -p "$(dirname "$target")"
  if ! cmp -s "$repo/scripts/get_pip_stand_in.py" "$target"; then
    cp "$repo/scripts/get_pip_stand_in.py" "$target"
    say "installed ansible-test pip bootstrap stand-in at $target"
  fi
}

install_apt_packages
install_venv
download_host_wheels
link_collection
install_pip_bootstrap_stand_in
say "setup done"
