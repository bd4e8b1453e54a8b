#!/usr/bin/env bash
# Set up Qubinode Workbench from nothing but the OS's Python 3.11+.
#   ./setup.sh          runtime: .venv with the workbench and its pinned dependencies
#   ./setup.sh --dev    also test tools, and Aider in its own venv (.venv-aider) for the agent tests
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
dev=0
[ "${1:-}" = "--dev" ] && dev=1

log() { printf '==> %s\n' "$*" >&2; }

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "setup.sh: Python 3.11 or newer is required (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, from the CPU build: a later resolve that sees no torch would pull a multi-GB CUDA build.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  log "installing torch (CPU build)"
  .venv/bin/pip install -q torch==2.13.0
fi
extras=""
[ $dev = 1 ] && extras="[dev]"
log "installing qubinode-workbench${extras}"
.venv/bin/pip install -q -c constraints.txt -e ".${extras}"

if [ $dev = 1 ]; then
  # aider-chat pins ~110 packages exactly (litellm, numpy, rich...): it gets a venv of its own.
  if [ ! -x .venv-aider/bin/aider ]; then
    log "installing aider-chat into .venv-aider"
    "$PY" -m venv .venv-aider
    .venv-aider/bin/pip install -q aider-chat==0.86.2
  fi
fi
# The embedder runs on ONNX Runtime: export the packaged weights once (offline; skipped when done).
log "exporting the embedding model to ONNX"
.venv/bin/qwb model export

log "ready: .venv/bin/qwb --help"
