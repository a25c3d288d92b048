#!/usr/bin/env bash
# Set up libtorch for seer-forecast's `tch` feature: a Python virtual environment at .venv
# (or $SEER_TORCH_VENV) with
# PyPI torch==2.13.0 (the libtorch that tch 0.26 expects), used through LIBTORCH_USE_PYTORCH=1.
#
# Idempotent: an existing .venv with torch 2.13.0 is kept. Run it from any directory.
#
#   scripts/setup-torch.sh            set up (if needed) and print the environment
#   eval "$(scripts/setup-torch.sh --env)"   set up, then export the environment in this shell
#
# Needs python3 (3.10+) with venv and network access to PyPI (or a mirror: PIP_INDEX_URL ...).
# The wheel is large (about 530 MB, plus NVIDIA libraries on Linux x86_64); nothing here needs a
# GPU: training runs on the CPU.
set -euo pipefail

readonly TORCH_VERSION="2.13.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# SEER_TORCH_VENV puts the environment elsewhere (CI keeps one between runs).
readonly VENV="${SEER_TORCH_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

log() { echo "setup-torch: $*" >&2; }

have_torch() {
    [[ -x "$VENV/bin/python" ]] &&
        "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" \
            2>/dev/null
}

if ! have_torch; then
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing torch==$TORCH_VERSION into $VENV (large download)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" >&2
    have_torch || { log "torch $TORCH_VERSION did not install"; exit 1; }
fi

TORCH_LIB="$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
readonly TORCH_LIB

# What building and running with `--features tch` needs.
export LIBTORCH_USE_PYTORCH=1
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [[ "${1:-}" == "--env" ]]; then
    printf 'export LIBTORCH_USE_PYTORCH=1\n'
    printf 'export PATH=%q:"$PATH"\n' "$VENV/bin"
    printf 'export LD_LIBRARY_PATH=%q"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\n' "$TORCH_LIB"
else
    log "torch $TORCH_VERSION ready in $VENV; to build with --features tch, export:"
    echo "export LIBTORCH_USE_PYTORCH=1"
    echo "export PATH=$VENV/bin:\$PATH"
    echo "export LD_LIBRARY_PATH=$TORCH_LIB:\$LD_LIBRARY_PATH"
fi
