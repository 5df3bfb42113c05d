#!/usr/bin/env bash
# The GPU checks, as one short script for a machine with a CUDA GPU and a python3 that has torch,
# torchvision, scikit-learn, pillow, numpy and pyyaml (the rest can come as wheels in ./.whl):
#
#   bash benchmarks/device_check.sh            # figures and logs go to $OUT (default ./device-out)
#
# 1. the GPU tests (tests/test_gpu.py) and the fast-path tests, on the GPU's torch;
# 2. the grid benchmark on cuda: engine vs the seed-style loop, plus ResNet-50 224 px MFU;
# 3. the same grid at 4x the images, where a GPU's batching has room to show.
set -uo pipefail
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/pm-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/pm-site:$PWD
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
} 2>&1 | tee "$OUT/machine.txt"

timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_fast_paths.py \
    2>&1 | tee "$OUT/tests.txt"
timeout 200 python3 -m benchmarks.grid --device cuda --mfu --json "$OUT/grid.json" 2>&1 | tee "$OUT/grid.txt"
timeout 150 python3 -m benchmarks.grid --device cuda --size 4 --json "$OUT/grid4.json" 2>&1 | tee "$OUT/grid4.txt"
