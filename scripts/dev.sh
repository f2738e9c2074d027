#!/usr/bin/env bash
# The two set-up commands from README.md, on a fresh Debian/Ubuntu machine with Python >= 3.11:
#   bash scripts/dev.sh tour    # set up, then a short tour of the projects (artifacts under out/)
#   bash scripts/dev.sh test    # set up, then the test suite and the linter
# Set-up: checks Python, makes sure clang (tinygrad's CPU compiler) and venv support are present --
# installing them with apt-get when run as root, otherwise stopping with the exact command to run --
# then creates .venv and installs this repo with its test extra. Extra arguments go to the tour or
# to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-}"; shift || true
case "$cmd" in tour|test) ;; *) echo "usage: bash scripts/dev.sh tour|test [args...]" >&2; exit 2 ;; esac

say() { printf '[setup] %s\n' "$*" >&2; }

# --- a Python >= 3.11 ----------------------------------------------------------------------------
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3 python3.13 python3.12 python3.11; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then PY="$c"; break; fi
  done
fi
if [ -z "$PY" ]; then
  say "Python >= 3.11 is required (tinygrad 0.14.0 needs it). On JetPack 6 / Ubuntu 22.04: sudo apt-get install -y python3.11 python3.11-venv, then PYTHON=python3.11 bash scripts/dev.sh $cmd"
  exit 1
fi
pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

# --- system packages: clang always, venv support, nix-instantiate for the flake check -------------
need=()
command -v clang >/dev/null || need+=(clang)
"$PY" -c 'import ensurepip, venv' 2>/dev/null || [ -x .venv/bin/python ] || need+=("python${pyver}-venv")
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    say "missing: ${need[*]}. Run: sudo apt-get install -y ${need[*]}   then run this command again."
    exit 1
  fi
fi
if [ "$cmd" = test ] && ! command -v nix-instantiate >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing nix-bin (nix-instantiate parses flake.nix in the tests)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin >/dev/null; } || say "nix-bin not installed; the flake parse test will be skipped"
  else
    say "nix-instantiate not found and not root: the flake parse test will be skipped (sudo apt-get install -y nix-bin to run it)"
  fi
fi

# --- the virtual environment --------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PY ($pyver)"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing the repo and its test extra into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  rm -f .venv/.installed-*; touch "$stamp"
fi

export PYTHONUNBUFFERED=1
if [ "$cmd" = tour ]; then exec .venv/bin/python -m common.tour "$@"; fi
# both cores: the suite is dominated by single-threaded kernel compilation (PYTEST_WORKERS=0 for serial)
status=0
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist worksteal "$@" || status=$?
say "ruff (lint, tinygrad's rules: pyproject.toml)"
.venv/bin/ruff check . || status=$((status ? status : 1))
exit "$status"
