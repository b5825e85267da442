#!/usr/bin/env bash
# usage: bash bench/make_lmms_eval_venv.sh [VENV_DIR] [LMMS_EVAL_SPEC]   (prints the interpreter path last)
#
# A side venv holding lmms-eval (default `lmms-eval==0.7.3`, with whatever torch and transformers it resolves) for
# bench/peers.py's lmms_eval row:
#   LMMS_EVAL_PYTHON=$(bash bench/make_lmms_eval_venv.sh | tail -n 1) python bench/peers.py --only lmms_eval
# Another version: pass its pip spec as the second argument (e.g. lmms-eval==0.6.1, or a local checkout's path).
# decord is added: lmms-eval's llava_hf module imports it although images never need it. It never touches the
# project's venv. Needs a Python 3.11 (`python3.11`, or LMMS_BASE_PYTHON), and downloads ~4 GB (torch's CUDA build).
set -euo pipefail
VENV="${1:-.devwork/lmms-venv}"
SPEC="${2:-lmms-eval==0.7.3}"
PY="${LMMS_BASE_PYTHON:-python3.11}"
command -v "$PY" >/dev/null || { echo "make_lmms_eval_venv: needs $PY (set LMMS_BASE_PYTHON)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import lmms_eval.models.simple.llava_hf' 2>/dev/null; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "$SPEC" decord
  "$VENV/bin/python" -c 'import lmms_eval.models.simple.llava_hf' >/dev/null
fi
cd "$(dirname "$VENV")" && echo "$(pwd)/$(basename "$VENV")/bin/python"
