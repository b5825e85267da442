#!/usr/bin/env bash
# usage: bash tests/vlm/make_llava_venv.sh [VENV_DIR]   (default: .llava-venv; prints the interpreter path last)
#
# A side venv holding the LLaVA-1.5 codebase (`llava-torch` 1.2.2.post1, import name `llava`) with its own pins
# (torch 2.0.1, transformers 4.36.2), for the parity checks in tests/vlm/test_vlm_llava_parity.py:
#   LLAVA_PYTHON=$(bash tests/vlm/make_llava_venv.sh | tail -n 1) pytest tests/vlm/test_vlm_llava_parity.py
# It never touches the project's venv. Needs a Python 3.11 (`python3.11`, or `python3` if that is 3.11), and
# downloads about 2.5 GB (torch 2.0.1's CUDA build from PyPI; it runs on the CPU).
set -euo pipefail
VENV="${1:-.llava-venv}"
PY="${LLAVA_BASE_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "make_llava_venv: needs Python 3.11 (set LLAVA_BASE_PYTHON)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import llava.model.builder' 2>/dev/null; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # llava-torch's own pins (its pyproject), installed first; then the package itself without its deps
  # (it would pull bitsandbytes, deepspeed and gradio, none of which loading or inference needs).
  "$VENV/bin/python" -m pip install -q torch==2.0.1 torchvision==0.15.2 transformers==4.36.2 tokenizers==0.15.0 \
    accelerate==0.21.0 einops==0.6.1 einops-exts==0.0.4 timm==0.6.13 sentencepiece protobuf shortuuid \
    numpy==1.26.4 pillow safetensors
  "$VENV/bin/python" -m pip install -q --no-deps llava-torch==1.2.2.post1
  "$VENV/bin/python" -c 'import llava.model.builder, llava.mm_utils, llava.train.train' >/dev/null
fi
cd "$(dirname "$VENV")" && echo "$(pwd)/$(basename "$VENV")/bin/python"
