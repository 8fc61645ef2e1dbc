#!/usr/bin/env bash
# Set up a virtual environment in .venv with smoltolk and its development tools.
# On the reference CPU machine torch is pinned to the CPU build lying on disk (2.13.0);
# elsewhere set SMOLTOLK_TORCH to the torch requirement you want (e.g. "torch>=2.5").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${SMOLTOLK_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "smoltolk is set up in .venv (activate with: source .venv/bin/activate)"
