#!/usr/bin/env bash
# A GPU session in one command: the device check (≤ 8 min), then, with PRESET_SWEEP=1, the preset-quality
# sweep (2–3 min on an H100) that picked the GPU preset. Results (text, JSON, the comparison figure) go to $OUT (default: .).
#
#     OUT=/tmp/out bash benchmarks/gpu_session.sh
#
# Each part has its own time limit, so a hang in one still leaves the other's numbers.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-.}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"

# The device check with issue 21's sections (graphs, floor, triage): about 5 minutes on an H100.
timeout 480 "$PY" benchmarks/device_check.py --time-limit 360 --json "$OUT/device_check.json" 2>&1 | tee "$OUT/device_check.txt"
[ "${PRESET_SWEEP:-0}" = 1 ] || exit 0

# Optional (PRESET_SWEEP=1): candidates for the GPU preset (issue 14: gain ≥ preview's, RMSE ≤ 0.06, flip
# retention ≥ 0.9, ≤ 1 s on an H100). "appendix_a" is the paper's recipe exactly (the paper preset plus σ = 0.02 noise).
timeout 240 "$PY" benchmarks/preset_quality.py --presets preview paper \
  --candidate appendix_a:preset=paper,noise=0.02 \
  --candidate c256:steps=60,n_crops=16,canvas=256,input_size=224,noise=0.02 \
  --candidate c320:steps=60,n_crops=16,canvas=320,input_size=224,noise=0.02 \
  --candidate c320_s100:steps=100,n_crops=16,canvas=320,input_size=224,noise=0.02 \
  --candidate c384_big_crops:steps=80,n_crops=16,canvas=384,input_size=224,noise=0.02,crop_range=0.25/0.99 \
  --candidate c320_8crops:steps=60,n_crops=8,canvas=320,input_size=224,noise=0.02 \
  --candidate preview_16crops:preset=preview,n_crops=16 \
  --figure "$OUT/preset_quality.png" --json "$OUT/preset_quality.json" 2>&1 | tee "$OUT/preset_quality.txt"
