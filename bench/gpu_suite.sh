#!/usr/bin/env bash
# The GPU benchmark a device session runs first (one H100 / H200; each step has a time limit, 9 minutes in all, and
# about 5 are expected): fused vs eager capture vs the sdpa forward+backward floor vs the per-sample loop for
# ViT-B/16 (224 px, bf16, batch 128) and BERT-base (seq 512, bf16), peak GPU memory against sequence length, and
# tokens explained per second and peak memory of a ~0.9B-parameter Llama-shaped LM at 2,048 tokens (bf16). Every
# figure lands as JSON in ${OUT:-out/gpu}; a step that fails or runs out of time is reported and the next one runs.
#
#   bash bench/gpu_suite.sh            # needs torch with CUDA (the device machine's), transformers, numpy
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" \
    || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
failed=0

step() {  # step NAME SECONDS SCRIPT ARGS...: SCRIPT's figures in $out/NAME.json, its output in $out/NAME.log
    local name=$1 limit=$2
    shift 2
    timeout "$limit" python3 "$@" --json "$out/$name.json" 2>&1 | tee "$out/$name.log" \
        || { echo "!! $name: exit ${PIPESTATUS[0]} (124: past its ${limit} s)" | tee -a "$out/failed.txt"; failed=1; }
}

step engine_vit_b16 240 bench/bench_engine.py --model vit-b16 --device cuda --precision bfloat16
step engine_bert_base_512 150 bench/bench_engine.py --model bert-base-512 --device cuda --precision bfloat16
# one process for every case on CUDA, and max_memory_allocated is exact: one repeat is enough
step memory 90 bench/bench_memory.py --device cuda --hidden 768 --layers 12 --heads 12 \
    --tokens 128 512 1024 2048 4096 --repeats 1
step lm_llama_1b 60 bench/bench_lm.py --preset llama-1b --device cuda
echo "figures in $out"
exit "$failed"
