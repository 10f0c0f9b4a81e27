#!/usr/bin/env bash
# The GPU evidence run (issue 11) as the device tool calls it, from the repository root; docs/gpu.md says how.
# Installs the carried wheels (.whl/: Torch-Pruning, which the GPU machine lacks) into /tmp/site, then runs
# bench/gpu_evidence.py on the CIFAR-10 tarball carried in .data/ (read in place, no unpacking), writing into
# $OUT (or the first argument). Further arguments go to gpu_evidence.py (e.g. --steps quality,latency).
set -u
if [ -n "${OUT:-}" ]; then out=$OUT
elif [ $# -gt 0 ]; then out=$1; shift
else echo "usage: OUT=DIR bench/gpu_evidence.sh [ARGS], or bench/gpu_evidence.sh DIR [ARGS]" >&2; exit 2
fi
ls .whl/*.whl >/dev/null 2>&1 || { echo "error: no wheels in .whl/ (carry .whl; docs/gpu.md)" >&2; exit 2; }
[ -f .data/cifar10-jpg.tar.gz ] || { echo "error: no .data/cifar10-jpg.tar.gz (carry .data)" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | head -3
exec python3 bench/gpu_evidence.py --out "$out" --data-dir .data "$@"
