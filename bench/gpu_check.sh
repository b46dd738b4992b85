#!/usr/bin/env bash
# The training engine's GPU check, as one script for a lent GPU machine (PyTorch, transformers and
# peft there; no vLLM, flash-attn or DeepSpeed):
#   1. the pretrain smoke recipe in bf16 on the GPU — the real Trainer path with FlexAttention's
#      document mask (rows padded to max_length, one compile per stage), two resolution stages;
#   2. bench/packing.py --device cuda --check — packed = unpacked (loss, every gradient) for each
#      packed backend in fp32, then packed vs padded training tokens/s in bf16 on the bench preset.
#
#   bash bench/gpu_check.sh                     # on the GPU machine, from the repository root
#   PY=.venv/bin/python DEVICE=cpu SAMPLES=60 STEPS=1 bash bench/gpu_check.sh   # a dry run here
#
# Python packages missing there travel as wheels in .whl/ (pydantic, pydicom, the locked transformers).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if [ -d .whl ] && [ "$DEVICE" = cuda ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export INFIMED_TINY_CACHE=${INFIMED_TINY_CACHE:-/tmp/infimed-tiny-cache} TOKENIZERS_PARALLELISM=false
[ "$DEVICE" = cuda ] && nvidia-smi -L
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

precision=bf16
[ "$DEVICE" = cpu ] && precision=fp32
sed -e "s/precision: fp32/precision: $precision/" pretrain/configs/smoke_tiny_cpu.yaml > "$OUT/smoke_gpu.yaml"
rm -rf /tmp/gpu-check-run
( time timeout "${PRETRAIN_TIMEOUT:-120}" $PY -m pretrain "$OUT/smoke_gpu.yaml" --output-dir /tmp/gpu-check-run ) 2>&1 \
  | grep -v "Loading weights" | tail -30 | tee "$OUT/pretrain.log"
ls /tmp/gpu-check-run/*/final 2>&1 | tee -a "$OUT/pretrain.log"

( time timeout "${BENCH_TIMEOUT:-330}" $PY bench/packing.py --device "$DEVICE" --check --samples "${SAMPLES:-400}" \
    --steps "${STEPS:-12}" --json "$OUT/packing.json" ) 2>&1 | grep -v "Loading weights" | tee "$OUT/packing.log"
