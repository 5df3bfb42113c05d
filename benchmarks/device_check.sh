#!/usr/bin/env bash
# The GPU checks as one short script, for a machine with a CUDA GPU and a python3 that has torch,
# torchvision, scikit-learn, pillow, numpy, pyyaml and pytest. The rest can come as wheels in
# ./.whl, fetched on a machine with a package index (for the GPU machine's Python, e.g. 3.12):
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       alembic annotated-types apscheduler mako pydantic pydantic-core pydantic-settings \
#       python-dotenv sqlalchemy typing-extensions typing-inspection tzlocal
#   (pydantic-core must be the version the pydantic wheel pins)
#
#   bash benchmarks/device_check.sh      # from the repository root; logs and figures go to $OUT
#
# 1. the GPU tests (tests/test_gpu.py);
# 2. the grid benchmark on cuda: the engine against the seed-style loop, plus ResNet-50 224 px MFU
#    (eager, then under torch.compile);
# 3. the same grid with 4x the images, where a GPU's batching has room to show.
# Each step has its own time limit (7.5 minutes together); the exit status is 1 when any
# step failed or ran out of time, and $OUT/status.txt says which.
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

failed=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt, record the status
    local name=$1 limit=$2
    shift 2
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "$name rc=$rc" | tee -a "$OUT/status.txt"
    [ "$rc" -eq 0 ] || failed=1
}
step tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
step grid 240 python3 -m benchmarks.grid --device cuda --mfu --mfu-compile --json "$OUT/grid.json"
step grid4 90 python3 -m benchmarks.grid --device cuda --size 4 --json "$OUT/grid4.json"
exit $failed
