#!/usr/bin/env bash
# Everything to measure on a GPU, in one call sized for a short lease (about 7 minutes on an H200):
#   1. gpu_throughput.py     precision / channels-last / compile side by side, MFU, the defaults' verdict
#   2. training_throughput.py  the trainer against a bare loop on the device (3 × 125 × 125, ResNet-15)
#   3. learning_curve.py     e/γ test AUC against training samples, up to 250k crops, images vs baseline
# Writes OUT/gpu_suite.json and OUT/gpu_suite.md (one table per part) plus each part's log.
#
#   bash benchmarks/gpu_suite.sh [--smoke] [--out DIR] [--python PY] [--only PART[,PART]]
#                                [--curve-sizes N,N,...] [--curve-models M,M] [--curve-set KEY=VALUE]...
#
# PARTS: throughput, trainer, curve. --smoke runs every part at a tiny size on whatever device there
# is (the test suite runs it on CPU). The learning curve's GPU budget: batch 512, lr 2e-3, 8 epochs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="runs/gpu_suite"
py="${PYTHON:-python3}"
smoke=0
only="throughput,trainer,curve"
curve_sizes="4000,16000,64000,250000"
curve_models="resnet15,vit"
curve_set=()
while [ $# -gt 0 ]; do
  case "$1" in
    --curve-sizes) curve_sizes="$2"; shift ;;
    --curve-models) curve_models="$2"; shift ;;
    --curve-set) curve_set+=(--set "$2"); shift ;;
    --smoke) smoke=1 ;;
    --out) out="$2"; shift ;;
    --python) py="$2"; shift ;;
    --only) only="$2"; shift ;;
    *) echo "gpu_suite.sh: unknown option $1 (--smoke, --out DIR, --python PY, --only PARTS)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1
has() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ "$smoke" = 1 ]; then
  thr=(--models resnet15 --geometries 2x16 --batch 8 --steps 2 --rounds 1 --warmup 1)
  trn=(--models resnet15 --geometries 2x16 --n 64 --batch 16 --epochs 1)
  crv=(--sizes 120,240 --test 120 --epochs 1 --models resnet15 --workers 1 "${curve_set[@]}")
else
  thr=(--models resnet15,vit_tiny,vit_sd_tiny,swin_tiny,coatnet_0 --geometries 3x125 --steps 20 --rounds 3
       --modes fp32,tf32,bf16,bf16+cl,default)
  trn=(--models resnet15 --geometries 3x125 --n 8192 --batch 256 --epochs 1)
  crv=(--sizes "$curve_sizes" --test 20000 --models "$curve_models" --workers 16 --epochs 8
       --set train.batch_size=512 --set train.lr=2e-3 "${curve_set[@]}")
fi

start=$(date +%s)
status=0
if has throughput; then
  "$py" "$here/gpu_throughput.py" "${thr[@]}" --json "$out/throughput.json" 2>&1 | tee "$out/throughput.log" \
    || status=1
fi
if has trainer; then
  "$py" "$here/training_throughput.py" "${trn[@]}" --json "$out/trainer.json" 2>&1 | tee "$out/trainer.log" \
    || status=1
fi
if has curve; then
  "$py" "$here/learning_curve.py" "${crv[@]}" --out "$out/curve" 2>&1 | tee "$out/curve.log" || status=1
fi
"$py" "$here/gpu_suite_summary.py" "$out" --seconds $(( $(date +%s) - start )) || status=1
exit $status
