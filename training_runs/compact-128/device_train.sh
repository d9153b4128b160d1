#!/usr/bin/env bash
# The compact model at 128² (issue 25 item 2), trained on a lent GPU in one call of the `device` tool.
#
# Why on a GPU: at 128² the CPU here manages about 3 s per step of 32 crops; the GPU does the same in milliseconds,
# so the few minutes a session is lent train the model far longer than hours here. What travels (the device tool
# carries at most 64 MiB): the code, .gpu/ (training_runs/compact-128/pack_for_device.py: the corpus and the
# attribute captions) and .whl/ (diffusers and importlib_metadata, which that machine lacks).
#
# It runs a 20-step smoke run of the same settings on 60 frames first (validation, grid, checkpoint, model folder:
# a failure there costs a minute, not the lease), then the run itself for MINUTES, then packs the run folder
# (without its checkpoints) into parts of at most 15 MiB under $OUT, the latest checkpoint's EMA weights among them
# in case the run did not reach its end.
#
#   bash training_runs/compact-128/device_train.sh            (on the device; MINUTES=7 by default)
#   MINUTES=0.3 WORKERS=2 BATCH=8 LIMIT=40 DEVICE_PYTHON=.venv/bin/python OUT=/tmp/o bash ...   (a dry run here)
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to the folder that comes back}
MINUTES=${MINUTES:-7}
WORKERS=${WORKERS:-14}
BATCH=${BATCH:-128}
PY=${DEVICE_PYTHON:-python3}
RUN=${RUN:-/tmp/compact-128}
if [ -d .whl ] && [ -z "${DEVICE_PYTHON:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU: a dry run"
MP=bf16
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || MP=no

ARGS=(--preset compact --input .gpu/kvasir-seg --normals .gpu/normal
      --resolution 128 --stem 2 --widths 32,64,128,128 --blocks 1 --attention-levels 3
      --attributes --normal-sizes 0.12,0.70 --normal-max-dark 0.05
      --batch-size "$BATCH" --lr 1e-3 --lr-schedule constant --warmup-steps 200 --ema-decay 0.9995
      --mixed-precision "$MP" --loader-workers "$WORKERS" --quiet)

echo "== smoke run"
mkdir -p /tmp/smoke && cp .gpu/attribute_captions.json /tmp/smoke/
"$PY" main.py train "${ARGS[@]}" --run /tmp/smoke --fresh --limit-frames 60 --steps 20 --checkpoint-every 10 \
    --validate-every 10 --sample-every 20 --log-every 5
tail -n 3 /tmp/smoke/log.jsonl

echo "== the run ($MINUTES min)"
mkdir -p "$RUN" && cp .gpu/attribute_captions.json "$RUN/"
status=0
"$PY" main.py train "${ARGS[@]}" --run "$RUN" ${LIMIT:+--limit-frames $LIMIT} --steps 1000000 \
    --max-minutes "$MINUTES" --checkpoint-every 2000 --validate-every 1000 --sample-every 4000 --log-every 50 \
    || status=$?
echo "training exited with $status"
tail -n 4 "$RUN/log.jsonl" || true

echo "== packing"
"$PY" - "$RUN" <<'EOF'
import sys
from pathlib import Path

from safetensors.torch import save_file

from engine.training.checkpoint import load_latest_checkpoint

run = Path(sys.argv[1])
checkpoint = load_latest_checkpoint(run)
if checkpoint is not None:
    ema = {k: v.contiguous() for k, v in checkpoint.group("ema").items()}
    save_file(ema, str(run / "latest_ema.safetensors"))
    print(f"latest checkpoint at step {checkpoint.step}: {len(ema)} EMA tensors")
EOF
tar -C "$(dirname "$RUN")" -cf /tmp/run.tar --exclude=checkpoints --exclude=best.safetensors "$(basename "$RUN")"
split -b 15m -d /tmp/run.tar "$OUT/run.tar.part-"
cp "$RUN/log.jsonl" "$OUT/" 2>/dev/null || true
ls -la "$OUT"
exit "$status"
