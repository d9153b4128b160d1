#!/usr/bin/env bash
# Fingerprint of the batch job's outputs, for a change that must not change them (a refactor):
#   tests/benchmarks/fingerprint_jobs.sh REPO OUT      then compare OUT/hashes.txt and OUT/meta.txt of two runs
# Five small jobs from REPO into OUT (4 Kvasir frames from ../shared/data/polyps and 3 generated ones): the compact
# model with user masks, random masks and removal; the demo SD-inpaint and demo ControlNet bundles. hashes.txt:
# sha256 of every image, mask and label file; meta.txt: every JSON/JSONL file with its time fields taken out.
# Run both sides into the same OUT path (data.yaml names its folder).
set -e
repo=$1; out=$2; rm -rf "$out"; mkdir -p "$out/in"
cd "$repo"
PY=.venv/bin/python
mkdir -p "$out/in/polyps/images" "$out/in/polyps/masks"
for f in $(ls ../shared/data/polyps/images | head -4); do cp ../shared/data/polyps/images/$f "$out/in/polyps/images/"; cp ../shared/data/polyps/masks/$f "$out/in/polyps/masks/"; done
$PY -c "from engine.samples import generate_sample_set; generate_sample_set('$out/in/samples', count=3, seed=0)"
$PY main.py --batch --input "$out/in/polyps" --output "$out/j1" --mask-source user --variants 2 --seed 3 --steps 6 --quiet --threads 2
$PY main.py --batch --input "$out/in/samples" --output "$out/j2" --mask-source random --variants 2 --seed 1 --steps 6 --quiet --threads 2
$PY main.py --batch --input "$out/in/polyps" --output "$out/j3" --mode remove --mask-source box --variants 1 --seed 2 --steps 6 --quiet --threads 2
$PY main.py --batch --input "$out/in/samples" --output "$out/j4" --model exported_models/demo-sd-inpaint --mask-source random --variants 1 --seed 1 --steps 3 --quiet --threads 2
$PY main.py --batch --input "$out/in/polyps" --output "$out/j5" --model exported_models/demo-sd-controlnet --mask-source user --variants 1 --seed 1 --steps 3 --quiet --threads 2
cd "$out"
find j1 j2 j3 j4 j5 -type f ! -name '*.jsonl' ! -name '*.json' ! -name '*.lock' ! -name '*.log' | sort | xargs sha256sum > hashes.txt
for f in $(find j1 j2 j3 j4 j5 -type f \( -name '*.jsonl' -o -name '*.json' \) | sort); do
  echo "== $f"; python3 - "$f" <<'PY'
import json,sys,re
p=sys.argv[1]
def strip(o):
    if isinstance(o,dict): return {k:strip(v) for k,v in sorted(o.items()) if not re.search(r'time|elapsed|seconds|date|created|duration|started|finished|host|pid|_s$',k)}
    if isinstance(o,list): return [strip(x) for x in o]
    return o
txt=open(p).read()
try: docs=[json.loads(txt)]
except Exception: docs=[json.loads(l) for l in txt.splitlines() if l.strip()]
for d in docs: print(json.dumps(strip(d),sort_keys=True))
PY
done > meta.txt
wc -l hashes.txt meta.txt
