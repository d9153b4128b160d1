#!/usr/bin/env bash
# Before the one `device` call that trains the 128² model (docs/compact-model.md#the-128-model-prepared-for-a-gpu-not-trained-yet):
# pack the corpus into .gpu/, fetch the wheels the GPU machine lacks into .whl/ (both ignored by git through
# .git/info/exclude), and switch to a temporary branch without the committed weights, so that what travels stays
# under the tool's 64 MiB. Then: run with carry [".gpu", ".whl"], command
#   bash training_runs/compact-128/device_train.sh 2>&1 | tee $OUT/device.log      (timeout_s 575)
# and afterwards: bash training_runs/compact-128/finish_device_call.sh FILES_AT
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-.venv/bin/python}
[ -z "$(git status --porcelain)" ] || { echo "commit or stash your changes first: the branch switch must not carry them"; exit 2; }
exclude="$(git rev-parse --git-dir)/info/exclude"
for folder in /.gpu/ /.whl/; do grep -qx "$folder" "$exclude" 2>/dev/null || echo "$folder" >> "$exclude"; done
"$PY" training_runs/compact-128/pack_for_device.py --data ../shared/data --out .gpu
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl diffusers==0.39.0 importlib_metadata
git switch -q -c device-light
git rm -r -q exported_models evaluations/kvasir-curve $(ls -d training_runs/* | grep -v compact-128)
git commit -q -m "temporary: the working tree without committed weights, for one device call"
echo "travels: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes of tree + $(du -sb .gpu .whl | awk '{s+=$1} END {print s}') carried"
