#!/usr/bin/env bash
# difflab on a CUDA GPU in one command, under 8 minutes, nothing downloaded:
#   1. google/ddpm-cifar10-32's UNet configuration (35.7M parameters, random weights) at batch 128 in bf16:
#      training steps/s and DDIM sampling images/s of difflab's UNet and of diffusers' UNet2DModel, with
#      the ratios (benchmarks/throughput.py --model cifar10), contiguous and channels_last;
#   2. the MNIST 10-minute recipe (BENCHMARKS.md) scaled to the GPU: bf16, channels_last, batch 256, 3 minutes,
#      then 64 samples (DDIM 50, trailing grid).
#
#   bash benchmarks/gpu.sh                         # on the GPU machine, from the repository root
#   MNIST=/path/to/mnist OUT=runs/gpu COMPILE=1 bash benchmarks/gpu.sh   # COMPILE=1 adds torch.compile variants
#   QUICK=1 bash benchmarks/gpu.sh                 # tiny sizes on the CPU: a check that it runs (tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-benchmarks/results/gpu}
MNIST=${MNIST:-../shared/data/mnist}
mkdir -p "$OUT"
if [ -n "${QUICK:-}" ]; then
  DEVICE=cpu
  TP="--quick --batch 4 --steps 2 --warmup 1 --sample-n 4 --sample-steps 2"
  TRAIN="--data digits --index-range 0:64 --channels 8,16 --steps 3 --batch-size 8"
  SAMPLE="--n 4 --steps 2"
else
  DEVICE=cuda
  TP="--batch 128 --steps 50 --warmup 10 --sample-n 512 --sample-steps 50"
  if [ -f "$MNIST/t10k-images-idx3-ubyte.gz" ]; then
    TRAIN="--data mnist --data-dir $MNIST --minutes 3 --batch-size 256"
  else
    echo "no MNIST at $MNIST (set MNIST=...): the recipe runs on scikit-learn's 8x8 digits instead"
    TRAIN="--data digits --minutes 3 --batch-size 256"
  fi
  SAMPLE="--n 64 --steps 50 --grid trailing"
fi
COMPILE_LIST=eager
[ -n "${COMPILE:-}" ] && COMPILE_LIST=eager,compile
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
# 1. the CIFAR-10 UNet: difflab against UNet2DModel (ratios printed at the end of the table)
"$PY" benchmarks/throughput.py --model cifar10 --device "$DEVICE" --precisions bf16 \
  --formats contiguous,channels_last --compile "$COMPILE_LIST" --sampling --procs "" $TP --out "$OUT/cifar10.json"
# 2. the MNIST recipe on the GPU
rm -rf "$OUT/mnist"
"$PY" -m difflab train $TRAIN --out "$OUT/mnist" --device "$DEVICE" --bf16 --channels-last --sample-every 0 \
  --no-progress
"$PY" -m difflab sample "$OUT/mnist" $SAMPLE --device "$DEVICE" --out "$OUT/mnist/samples" --no-progress
echo "results: $OUT/cifar10.md, $OUT/mnist (log.jsonl, samples)"
