#!/usr/bin/env bash
# The paper-shape training step on GPUs: bf16 autocast, torch.compile, MFU against the device's peak.
# Not run on the CPU reference machine (it has no GPU); nothing in the README is measured with it yet.
#   PEAK_FLOPS=989e12 bash bench/gpu.sh            # one GPU (e.g. H100 SXM dense bf16: 989 TFLOP/s)
#   NPROC=8 PEAK_FLOPS=989e12 bash bench/gpu.sh    # + the trainer under torchrun with FSDP2 on 8 GPUs
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PEAK_FLOPS=${PEAK_FLOPS:?set PEAK_FLOPS to the GPU's peak bf16 FLOP/s}
"$PY" bench/paper_shapes.py --device cuda --bf16 --compile --peak-flops "$PEAK_FLOPS" --batch "${BATCH:-8}" \
    --contexts 1024 2048 --repeats 2 --steps 5 --warmup 3
if [ "${NPROC:-1}" -gt 1 ]; then
    # FSDP2 across NPROC GPUs through the real trainer on a synthetic corpus (MFU in metrics.jsonl)
    "$PY" -m smoltolk.cli synth-data runs/gpu-data --utterances 4000 --documents 4000
    "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m smoltolk.cli train recipes/tiny.yaml \
        --set model.preset=smoltolk-150m --set run.distributed=fsdp --set run.precision=bf16 --set run.compile=true \
        --set run.peak_flops="$PEAK_FLOPS" --set data.context=1024 --set schedule.micro_batch=8 \
        --set schedule.stage1_steps=10 --set schedule.stage2_steps=40 --set run.out_dir=runs/gpu-fsdp \
        --set "data.datasets=[{path: runs/gpu-data/speech, modality: speech}, {path: runs/gpu-data/text, modality: text}, {path: runs/gpu-data/speech, modality: interleaved}]" \
        --set validation.every=0 --set run.progress=false
    tail -n 3 runs/gpu-fsdp/metrics.jsonl
fi
