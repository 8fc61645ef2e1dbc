#!/usr/bin/env bash
# Set up a virtual environment in .venv with smoltolk and its development tools.
# torch defaults to torch==2.13.0; set SMOLTOLK_TORCH to the torch requirement you want instead
# (e.g. "torch>=2.5" on a GPU machine). The package itself asks for torch>=2.5.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${SMOLTOLK_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# espeak-ng reads the mini-world's stories aloud for `smoltolk demo --audio`; nothing else needs it.
if ! command -v espeak-ng >/dev/null 2>&1; then
    as_root=""  # root: nothing; else password-less sudo, or "-" for no way to install
    if [ "$(id -u)" != 0 ]; then if sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root="-"; fi; fi
    if [ "$as_root" != - ] && command -v apt-get >/dev/null 2>&1; then
        apt_install="$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng"
        $apt_install >/dev/null 2>&1 || { $as_root apt-get update -qq >/dev/null 2>&1 && $apt_install >/dev/null 2>&1; } \
            || true
    fi
    command -v espeak-ng >/dev/null 2>&1 || echo "note: espeak-ng is not installed; only 'smoltolk demo --audio' needs it" \
        "(apt-get install espeak-ng, or brew install espeak-ng on macOS)"
fi
echo "smoltolk is set up in .venv (activate with: source .venv/bin/activate)"
