#!/usr/bin/env bash
# usage: bash bench/gpu_acceptance.sh [gpu_acceptance.py args]     (PYTHON=.venv/bin/python ... --dry-run here)
#
# On a lent H100 or H200 (a plain `run` gets the H100 kind), after `bash bench/stage_wheels.sh` here, one device
# call runs every check:
#   run(command="bash bench/gpu_acceptance.sh", carry=[".whl"], timeout_s=540)
# It installs the carried wheels into /tmp/site (nothing can be fetched there), puts the repository and them on
# PYTHONPATH (the package is not installed on that image), runs bench/gpu_acceptance.py with unbuffered output and
# tees the log to $OUT/gpu_acceptance.log beside the script's gpu_acceptance.json and gpu_acceptance.md (3 of the 8
# files a call may bring back).
set -o pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
out="${OUT:-runs/gpu_acceptance}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  if compgen -G ".whl/*.whl" >/dev/null; then
    if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl; then
      export PYTHONPATH="$PYTHONPATH:/tmp/site"
    else
      echo "installing .whl/*.whl failed: the env row names what is missing"
    fi
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null
  "$python" bench/gpu_acceptance.py --out "$out" "$@"
} 2>&1 | tee "$out/gpu_acceptance.log"
