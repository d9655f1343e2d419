#!/usr/bin/env bash
# The GPU run: every shipped spec on CUDA against the CPU (TF32 off, then on), the GPU tests, and
# benchmarks/gpu.py; its outputs go to $OUT (default ./gpu-out). About 5-8 minutes on one
# H100-class GPU. `bash benchmarks/gpu_run.sh --smoke` runs the same steps on the CPU, small.
#
# Wheels the GPU machine lacks (captum, pydantic, this package) may travel in .whl/: they are
# installed into a temporary folder put first on PYTHONPATH. cpu.json (the shipped specs on a CPU,
# made by benchmarks/gpu_compare.py) is reused when it is in the checkout, else made here first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"
DEVICE=cuda
CPU_JSON=cpu.json
SPECS=()
GPU_BENCH=(--images 512)
if [ "${1:-}" = "--smoke" ]; then  # the CPU as the "GPU", one spec, a tiny benchmark
    DEVICE=cpu
    CPU_JSON="$OUT/cpu-smoke.json"
    SPECS=(--specs specs/shapes.saliency.yaml)
    GPU_BENCH=(--device cpu --images 4 --size 32 --batch-size 4 --shard-size 4)
fi

if [ -d .whl ]; then
    SITE="$(mktemp -d)"
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"

status=0
echo "== shipped specs on $DEVICE vs the CPU, TF32 off (values within 1e-3)"
"$PYTHON" benchmarks/gpu_compare.py --device "$DEVICE" --json "$OUT/gpu-tf32-off.json" --cpu-json "$CPU_JSON" \
    --tf32 off "${SPECS[@]}" 2>&1 | tee "$OUT/compare-tf32-off.txt" || status=1
echo "== the same with TF32 on (PyTorch's default for convolutions; reported, not gated)"
"$PYTHON" benchmarks/gpu_compare.py --device "$DEVICE" --json "$OUT/gpu-tf32-on.json" --cpu-json "$CPU_JSON" \
    --tf32 on --tolerance 1e-2 "${SPECS[@]}" 2>&1 | tee "$OUT/compare-tf32-on.txt"

echo "== the GPU tests (skipped without CUDA)"
"$PYTHON" -m pytest -q -p no:cacheprovider -p no:randomly -rs tests/unit/test_speed.py \
    tests/unit/metrics/test_decomposition.py::test_runs_on_the_inputs_device \
    "tests/unit/loaders/test_dataset.py" -k "speed or inputs_device or pin_memory" 2>&1 | tail -15 \
    | tee "$OUT/gpu-tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

echo "== benchmarks/gpu.py"
"$PYTHON" benchmarks/gpu.py "${GPU_BENCH[@]}" 2>&1 | tee "$OUT/gpu-bench.txt" || status=1
exit $status
