#!/usr/bin/env bash
# After the device call: back to main (the committed weights return), then the run folder home and its bundle.
#   bash training_runs/compact-128/finish_device_call.sh FILES_AT
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-.venv/bin/python}
if [ "$(git branch --show-current)" = device-light ]; then
    git switch -q main
    git branch -D device-light
fi
if [ $# -ge 1 ]; then
    "$PY" training_runs/compact-128/unpack_device_run.py "$1"
    make compact128-bundle
fi
