#!/usr/bin/env bash
# Prints the path of a venv with python/requirements-test.txt installed, creating it
# first when needed. The venv lives outside the clone, keyed by the requirements
# file's hash (a changed pin gets a fresh venv): ~/.cache/raspc/venv-<hash>. A venv
# whose creation was interrupted has no .complete marker and is made again.
#   ./scripts/python-venv.sh [REQUIREMENTS]
set -euo pipefail
reqs=${1:-python/requirements-test.txt}
hash=$(sha256sum "$reqs" | cut -c1-16)
venv=${RASPC_VENV_DIR:-$HOME/.cache/raspc}/venv-$hash
if [[ ! -f "$venv/.complete" ]]; then
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  echo "raspc: creating $venv (pip install -r $reqs)" >&2
  /usr/bin/python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs" >&2
  touch "$venv/.complete"
fi
echo "$venv"
