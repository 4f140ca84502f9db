#!/usr/bin/env bash
# The GPU benchmark a device session runs first (one H100 / H200, about 5 minutes): fused vs eager capture vs
# the sdpa forward+backward floor vs the per-sample loop for ViT-B/16 (224 px, bf16, batch 128) and BERT-base
# (seq 512, bf16), and peak GPU memory against sequence length. Every figure lands as JSON in ${OUT:-out/gpu}.
#
#   bash bench/gpu_suite.sh            # needs torch with CUDA (the device machine's), transformers, numpy
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 240 python3 bench/bench_engine.py --model vit-b16 --device cuda --precision bfloat16 \
    --json "$out/engine_vit_b16.json" 2>&1 | tee "$out/engine_vit_b16.log"
timeout 150 python3 bench/bench_engine.py --model bert-base-512 --device cuda --precision bfloat16 \
    --json "$out/engine_bert_base_512.json" 2>&1 | tee "$out/engine_bert_base_512.log"
timeout 120 python3 bench/bench_memory.py --device cuda --hidden 768 --layers 12 --heads 12 \
    --tokens 128 512 1024 2048 4096 --json "$out/memory.json" 2>&1 | tee "$out/memory.log"
echo "figures in $out"
