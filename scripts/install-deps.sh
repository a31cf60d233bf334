#!/usr/bin/env bash
# Installs the Debian packages raspc builds and tests with. Idempotent: when every
# package is present it only runs dpkg-query and returns.
#   ./scripts/install-deps.sh        build and demo
#   ./scripts/install-deps.sh test   also what only the tests and benchmarks need (PyTorch, the
#                                    CRATE reference; large, so `make demo` skips it)
set -euo pipefail
PKGS=(
  make cmake g++ pkg-config git ccache
  llvm-14-dev clang-14 libclang-rt-14-dev   # LLVM Support; clang for the libFuzzer target
  libedit-dev                                # LLVM LineEditor (the REPL), linked statically
  libeigen3-dev libfmt-dev libcli11-dev libgtest-dev libgmock-dev libhdf5-dev
  python3 python3-numpy python3-h5py
)
case "${1:-}" in
  "") ;;
  test) PKGS+=(python3-torch python3-venv python3-dev) ;; # python3-venv, -dev: the pip package's venv
  *) echo "usage: $0 [test]" >&2; exit 2 ;;
esac
missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "raspc: installing missing packages: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "raspc: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2; echo "raspc: apt-get failed (log above)" >&2; exit 1
fi
rm -f "$log"
