#!/usr/bin/env bash
# usage: bash bench/stage_wheels.sh        (here, with pip and a package registry; then `run` with carry [".whl"])
#
# Downloads into .whl/ (git-ignored) the wheels the GPU image lacks for bench/gpu_acceptance.py, for that image's
# Python 3.12 on x86-64: open_clip_torch (CLIP text tower and loss) and its ftfy + wcwidth, and pycocoevalcap
# (CIDEr). pycocoevalcap's wheel is 104 MB, over what a call carries (64 MiB), almost all of it Java jars (PTB
# tokenizer, METEOR, SPICE) that cannot run there (no Java): they are dropped from the wheel and its RECORD,
# leaving ~60 KB of Python. Everything else the checks import is on the image (KINDS.md's package list).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 pycocoevalcap==1.2
python3 - "$dest"/pycocoevalcap-1.2-py3-none-any.whl <<'PY'
import sys, zipfile, os

path = sys.argv[1]
drop = (".jar", ".gz")
with zipfile.ZipFile(path) as src:
    if not any(n.endswith(drop) for n in src.namelist()):
        sys.exit(0)  # slimmed already
    kept = [i for i in src.infolist() if not i.filename.endswith(drop)]
    files = {i.filename: src.read(i) for i in kept}
record = next(n for n in files if n.endswith(".dist-info/RECORD"))
lines = files[record].decode().splitlines()
files[record] = "".join(line + "\n" for line in lines if not line.split(",")[0].endswith(drop)).encode()
tmp = path + ".tmp"
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
    for name, data in files.items():
        out.writestr(name, data)
os.replace(tmp, path)
PY
ls -l "$dest"
du -ch "$dest"/*.whl | tail -1
