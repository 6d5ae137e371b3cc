#!/usr/bin/env bash
# Installs what archc needs on a fresh Debian machine (idempotent; skips what is already there):
#   - graphviz's `dot` binary (Debian package graphviz), for `archc draw`;
#   - Debian's chromium and chromium-driver, for the test that opens `archc report`'s page in a browser;
#   - PyTorch's CPU build (torch==2.13.0; installing it first keeps pip from pulling a CUDA build);
#   - archc itself, editable, with its test dependencies.
set -euo pipefail
cd "$(dirname "$0")"

missing=""
command -v dot >/dev/null 2>&1 || missing="$missing graphviz"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
if [ -n "$missing" ]; then
  echo "setup: installing$missing (apt)..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch (CPU build)..." >&2
  "$PY" -m pip install -q "torch==2.13.0"
fi

# (re)install when archc is missing or installed from another checkout than this one
here="$(pwd)/archcompiler"
installed="$(cd / && "$PY" -c "import archcompiler, re2, pytest, xdist, hypothesis, graphviz, onnx, onnxscript, onnxruntime, PIL, matplotlib, tqdm, sklearn, selenium, safetensors, tensorboard, optuna, os; print(os.path.dirname(archcompiler.__file__))" 2>/dev/null || true)"
if [ "$installed" != "$here" ] || ! command -v archc >/dev/null 2>&1; then
  echo "setup: installing archc..." >&2
  "$PY" -m pip install -q -e ".[dev]"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
echo "setup: ready ($("$PY" -c 'import torch; print("torch", torch.__version__)'), $(dot -V 2>&1))" >&2
