#!/usr/bin/env bash
# Stages what experiments/sparse_accelerator.sh needs on an accelerator machine that has JAX,
# flax, optax and orbax but no network: the wheels of the packages its image lacks and the
# Bandai archives, in two parts of under 64 MiB each for uploads limited to that size.
#
#   tools/stage_accelerator.sh [PYTHON_VERSION]     # default 3.12, the accelerator image's
#
# Writes .accel/wheels (grain, array-record, portpicker, tensorboardX for that Python on
# x86-64 Linux), .accel/bandai-a (dataset 1, the labels, four dataset-2 archives) and
# .accel/bandai-b (the other dataset-2 archives). .accel/ is git-ignored: the data is never
# committed. Needs the package index once, here; nothing is fetched on the accelerator.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
pyver=${1:-3.12}
src=${MMAR_BANDAI_DIR:-$here/../shared/data/bandai-namco}
out=$here/.accel
[[ -d "$src" ]] || { echo "error: Bandai data not found at $src (set MMAR_BANDAI_DIR)" >&2; exit 1; }
rm -rf "$out.tmp" && mkdir -p "$out.tmp/wheels" "$out.tmp/bandai-a" "$out.tmp/bandai-b"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$pyver" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$out.tmp/wheels" \
  grain==0.2.18 array-record==0.8.6 portpicker tensorboardX==2.6.5
cp -r "$src"/README.md "$src"/LICENSE "$src"/SHA256SUMS "$src"/cfg-1 "$src"/cfg-2 "$out.tmp/bandai-a/"
i=0
for a in "$src"/*.tar.xz; do  # dataset 1 sorts first; then alternate parts by size order
  case $(basename "$a") in
    *dataset-1*) cp "$a" "$out.tmp/bandai-a/" ;;
    *) if (( i++ % 2 )); then cp "$a" "$out.tmp/bandai-b/"; else cp "$a" "$out.tmp/bandai-a/"; fi ;;
  esac
done
chmod -R u+w "$out.tmp"
rm -rf "$out" && mv "$out.tmp" "$out"
du -sh "$out"/* | sed 's/^/staged /'
