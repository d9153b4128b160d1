# PolypForge: `make demo` and `make test` work from a fresh clone with python3 and the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned and installed before anything that depends on it, so pip takes the CPU build instead of
# pulling a multi-GB CUDA one.
TORCH  ?= torch==2.13.0

.PHONY: evaluate-kvasir train-compact anneal-compact train-attributes attributes-bundle train-compact96 compact96-bundle train-lift128 lift128-bundle train-rare128 rare128-bundle compact128-bundle train-detail train-ccis-compact ccis-compact-bundle demo test ultralytics-env test-ultralytics screenshots installer installer-test bench bench-retrieval bench-ray bench-scale demo-bundle demo-features demo-controlnet clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime only (what a curator's PC needs): onnxruntime, numpy, pillow, tokenizers.
$(VENV)/.runtime-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[cpu]"
	touch $@

# Everything a developer needs: export (torch, diffusers, optimum), desktop (PySide6), Ray (the ray backend's
# tests), tests.
$(VENV)/.dev-installed: pyproject.toml $(VENV)/.runtime-installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[cpu,export,desktop,ray,dev]"
	touch $@

demo: $(VENV)/.runtime-installed
	$(BIN)/python main.py demo

# Two pytest workers (pytest-xdist): most tests are single-threaded Python or wait on subprocesses, so two of
# them share the two cores well (11.2 -> 8.4 minutes here). TEST_WORKERS=0 runs them in one process. Tests marked
# with an xdist_group run on one worker (the Ray tests: one local Ray instance at a time).
TEST_WORKERS ?= 2
test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

screenshots: $(VENV)/.dev-installed
	$(BIN)/python -m desktop.screenshots screenshots

# The offline app (installer/README.md): dist/PolypForge/ + dist/PolypForge-<ver>-linux-<arch>-cpu.tar.gz
installer: $(VENV)/.dev-installed
	BUILD_PYTHON=$(BIN)/python installer/build.sh cpu --archive

# Runs the BUILT app: --version, doctor, an offline --batch job (dataset checked), the window offscreen
installer-test: installer
	$(BIN)/python installer/smoke_test.py

bench: $(VENV)/.dev-installed
	$(BIN)/python tests/benchmarks/bench_inpaint.py $(BENCH_ARGS)

bench-retrieval: $(VENV)/.dev-installed
	$(BIN)/python tests/benchmarks/bench_retrieval.py $(BENCH_ARGS)

# frames/min with 1 and 2 CPU Ray workers on the demo bundle, Ray's startup overhead, 100k-frame projection
bench-ray: $(VENV)/.dev-installed
	$(BIN)/python tests/benchmarks/bench_ray.py $(BENCH_ARGS)

# Discovery, planning, resume and the job-end rebuild at 10k / 30k / 100k frames: seconds and peak memory
bench-scale: $(VENV)/.runtime-installed
	$(BIN)/python tests/benchmarks/bench_scale.py $(BENCH_ARGS)

demo-bundle: $(VENV)/.dev-installed
	$(BIN)/python exported_models/make_demo_bundle.py

demo-features: $(VENV)/.dev-installed
	$(BIN)/python exported_models/make_demo_features.py

demo-controlnet: $(VENV)/.dev-installed
	$(BIN)/python exported_models/make_demo_controlnet.py

# The compact polyp model (issue 12), in two stages:
# - train-compact: the long run, training_runs/compact, resumed from its committed checkpoint for COMPACT_MINUTES
#   (constant lr 1e-3); it exports its own bundle to .bench/compact-long, not the default.
# - anneal-compact: a warm start from the long run's EMA weights with a cosine decay from 3e-4 (600 steps, ~1.1 h on
#   one thread), training_runs/compact-anneal, exported as exported_models/polypforge-compact (the default model).
COMPACT_STEPS   ?= 40000
COMPACT_MINUTES ?= 120
COMPACT_THREADS ?= 2
COMPACT_NETWORK = --preset compact --input ../shared/data/kvasir-seg --normals ../shared/data/normal --resolution 64 \
    --widths 32,64,128 --blocks 1 --stem 1 --attention-levels "" --batch-size 32 --validate-every 250 \
    --keep-checkpoints 1
COMPACT_SHAPE = $(COMPACT_NETWORK) --threads $(COMPACT_THREADS)
train-compact: $(VENV)/.dev-installed
	$(BIN)/python main.py train $(COMPACT_SHAPE) --run training_runs/compact --steps $(COMPACT_STEPS) \
	    --checkpoint-every 100 --sample-every 500 --max-minutes $(COMPACT_MINUTES) \
	    --to .bench/compact-long --name polypforge-compact-long

anneal-compact: $(VENV)/.dev-installed
	$(BIN)/python main.py train $(COMPACT_SHAPE) --run training_runs/compact-anneal --init-from training_runs/compact/model \
	    --lr 3e-4 --lr-schedule cosine --warmup-steps 20 --steps 600 --checkpoint-every 100 --sample-every 300 --validate-every 300 \
	    --to exported_models/polypforge-compact --name polypforge-compact

# The compact model with attributes (issue 25 items 3 and 4): the default model's weights plus zero-initialised
# attribute embeddings (colour, surface, elevation chosen; size and outline measured on the mask), fine-tuned on
# captioned Kvasir-SEG crops, with Normal regions up to 70 % of the shorter side and off the lumen (large removals
# fill with mucosa), ATTR_MINUTES per invocation (it resumes where it stopped), exported to .bench/compact-attributes
# (not the default until its read-back is measured).
ATTR_STEPS   ?= 2000
ATTR_MINUTES ?= 120
ATTR_THREADS ?= 1
train-attributes: $(VENV)/.dev-installed
	$(BIN)/python main.py train $(COMPACT_NETWORK) --threads $(ATTR_THREADS) --attributes \
	    --normal-sizes 0.12,0.70 --normal-max-dark 0.05 \
	    --run training_runs/compact-attributes --init-from training_runs/compact-anneal/model \
	    --lr 3e-4 --lr-schedule cosine --warmup-steps 20 --steps $(ATTR_STEPS) --checkpoint-every 50 \
	    --sample-every 500 --validate-every 500 --max-minutes $(ATTR_MINUTES) \
	    --to .bench/compact-attributes --name polypforge-compact-attributes

# A committed run's model folder (training_runs/$(1)/model) exported to .bench/$(2) as bundle polypforge-$(2), with
# its card, parity-checked: the *-bundle targets below.
define export_committed
$(BIN)/python -c "from pathlib import Path; from engine.export.compact_export import export_compact_bundle as export; \
    export('training_runs/$(1)/model', '.bench/$(2)', name='polypforge-$(2)', card=Path('training_runs/$(1)/model/MODEL_CARD.md'))"
endef

# The committed result of that run (training_runs/compact-attributes/model, 2,000 steps) as a bundle in
# .bench/compact-attributes, parity-checked, without training (its checkpoint is not committed: on a fresh clone
# `make train-attributes` would train it again from the default model).
attributes-bundle: $(VENV)/.dev-installed
	$(call export_committed,compact-attributes,compact-attributes)

# The compact model at 96² (issue 25 item 2, the next default model's candidate): the attribute run's newest
# weights (attributes and large Normal regions, items 3-4) fine-tuned on crops of 96² instead of 64², batch 16 (about
# the pixels per step of the 64² runs), so large regions are painted with more detail: `--working-size 96` on the
# 64² model already adds texture and finds 24 % -> 40 % of large polyps (docs/compact-model.md#working-size-probe);
# this run teaches the model that scale. C96_MINUTES per invocation (it resumes where it stopped), exported to
# .bench/compact-96 (image_size 96; not the default until its learning-curve arm beats the default's).
C96_STEPS   ?= 1500
C96_MINUTES ?= 120
C96_THREADS ?= 1
train-compact96: $(VENV)/.dev-installed
	mkdir -p training_runs/compact-96  # the attribute run's captions of the same frames: not measured again
	test -f training_runs/compact-96/attribute_captions.json || \
	    cp training_runs/compact-attributes/attribute_captions.json training_runs/compact-96/
	$(BIN)/python main.py train $(subst --resolution 64,--resolution 96,$(subst --batch-size 32,--batch-size 16,$(COMPACT_NETWORK))) \
	    --threads $(C96_THREADS) --attributes --normal-sizes 0.12,0.70 --normal-max-dark 0.05 \
	    --run training_runs/compact-96 --init-from training_runs/compact-attributes/model \
	    --lr 3e-4 --lr-schedule cosine --warmup-steps 20 --steps $(C96_STEPS) --checkpoint-every 50 \
	    --sample-every 500 --validate-every 500 --max-minutes $(C96_MINUTES) \
	    --to .bench/compact-96 --name polypforge-compact-96

# A run on 128² crops of the lifted network (a stem of 2, the schedule shifted for 128², the cell shortcut) with
# attributes and wide lumen-free Normal regions: $(1) the run (training_runs/$(1), exported to .bench/$(1) as bundle
# polypforge-$(1)), $(2) the weights it starts from, $(3) the peak learning rate, $(4) further flags.
define train_lifted128
	mkdir -p training_runs/$(1)  # the attribute run's captions of the same frames: not measured again
	test -f training_runs/$(1)/attribute_captions.json || \
	    cp training_runs/compact-attributes/attribute_captions.json training_runs/$(1)/
	$(BIN)/python main.py train $(subst --stem 1,--stem 2,$(subst --resolution 64,--resolution 128,$(subst --batch-size 32,--batch-size 16,$(COMPACT_NETWORK)))) \
	    --attributes --normal-sizes 0.12,0.70 --normal-max-dark 0.05 --schedule-shift 2 --cell-shortcut \
	    --run training_runs/$(1) --init-from $(2) --lr $(3) --lr-schedule cosine --warmup-steps 20 --checkpoint-every 50 \
	    --sample-every 500 --validate-every 500 $(4) --to .bench/$(1) --name polypforge-$(1)
endef

# The compact model lifted to 128² (issue 25 item 2 on this CPU, while the 128² GPU run below waits for a GPU): the
# attribute run's weights with a space-to-depth stem of 2 (engine.models.compact_unet.lift_stem_weights: at step 0
# it is the 64² model on 2x2-averaged pixels, its trunk still at 64², so the receptive field over the view is what it
# was) and the cosine schedule shifted for twice the resolution (--schedule-shift 2), fine-tuned on 128² crops so its
# first and last layers learn the detail a 64² view cannot hold. L128_MINUTES per invocation (it resumes).
L128_STEPS   ?= 2000
L128_MINUTES ?= 120
L128_THREADS ?= 2
train-lift128: $(VENV)/.dev-installed
	$(call train_lifted128,compact-lift128,training_runs/compact-attributes/model,3e-4,--threads $(L128_THREADS) --steps $(L128_STEPS) --max-minutes $(L128_MINUTES))

# The lifted 128² model fine-tuned with rare attributes drawn more often (issue 25 item 3: whitish, irregular and flat
# read back 0 % when asked of the models trained in proportion): polyps whose colour, surface or elevation is rare
# are drawn so that each value makes up about RARE_FLOOR of the Polyp pairs (engine.training.attribute_balance; the
# run's log prints the shares), and the attribute embeddings trained at RARE_EMB_LR times the learning rate (at the
# plain rate they stay near zero beside the label's embedding); everything else as train-lift128. RARE_MINUTES per
# invocation (it resumes).
RARE_STEPS   ?= 1500
RARE_MINUTES ?= 120
RARE_THREADS ?= 2
RARE_FLOOR   ?= 0.2
RARE_EMB_LR  ?= 100
train-rare128: $(VENV)/.dev-installed
	$(call train_lifted128,compact-rare128,training_runs/compact-lift128/model,2e-4,--threads $(RARE_THREADS) --steps $(RARE_STEPS) --max-minutes $(RARE_MINUTES) --rare-attributes $(RARE_FLOOR) --attribute-lr-scale $(RARE_EMB_LR))

# The committed result of that run (training_runs/compact-rare128/model) as a bundle in .bench/compact-rare128.
rare128-bundle: $(VENV)/.dev-installed
	$(call export_committed,compact-rare128,compact-rare128)

# The committed result of that run (training_runs/compact-96/model) as a bundle in .bench/compact-96, parity-checked,
# without training (a fresh clone: what evaluations/kvasir_curve.py's candidate arm and the scorecard read).
compact96-bundle: $(VENV)/.dev-installed
	$(call export_committed,compact-96,compact-96)

# The committed result of train-lift128 (training_runs/compact-lift128/model) as .bench/compact-lift128, without training.
lift128-bundle: $(VENV)/.dev-installed
	$(call export_committed,compact-lift128,compact-lift128)

# The compact model at 128² (issue 25 item 2: a working view of 128² for every region; 32-64-128-128, a space-to-depth
# stem of 2, attention at 8², attributes, large Normal regions; 4.5 M parameters, as fast as the 64² default on a
# CPU). Trained from scratch on a lent GPU by training_runs/compact-128/device_train.sh (the CPU here is ~100x too
# slow for it); the run comes home with training_runs/compact-128/unpack_device_run.py. This target exports the
# committed model folder to .bench/compact-128, parity-checked.
compact128-bundle: $(VENV)/.dev-installed
	test -f training_runs/compact-128/model/model.safetensors || { echo "training_runs/compact-128/model: not trained yet (training_runs/compact-128/device_train.sh on a GPU)"; exit 2; }
	$(call export_committed,compact-128,compact-128)

# The compact model's detail stage (issue 25): a 128² SR3-style U-Net that repaints large region crops from the
# default model's 64² result, trained from scratch on real Kvasir-SEG crops (~1.4 s a step of 16 on one thread),
# DETAIL_MINUTES per invocation (it resumes where it stopped), exported with the default model as its base to
# .bench/compact-detail (not shipped).
DETAIL_STEPS   ?= 6000
DETAIL_MINUTES ?= 120
DETAIL_THREADS ?= 1
DETAIL_RUN     ?= training_runs/compact-detail
train-detail: $(VENV)/.dev-installed
	$(BIN)/python main.py train --method detail --preset compact --init-from training_runs/compact-anneal/model \
	    --input ../shared/data/kvasir-seg --normals ../shared/data/normal --run $(DETAIL_RUN) --steps $(DETAIL_STEPS) \
	    --checkpoint-every 100 --keep-checkpoints 1 --threads $(DETAIL_THREADS) --max-minutes $(DETAIL_MINUTES) \
	    --to .bench/compact-detail --name polypforge-compact-detail

# A compact CCIS ControlNet (issue 14) on the default compact model, frozen: captions from `main.py caption` (written
# once into the run folder), then CCIS_STEPS steps (~5 s a step on one thread), CCIS_MINUTES per invocation (it
# resumes where it stopped), exported to .bench/ccis-compact (not shipped).
CCIS_STEPS   ?= 1000
CCIS_MINUTES ?= 120
CCIS_THREADS ?= 1
CCIS_RUN     ?= training_runs/ccis-compact
train-ccis-compact: $(VENV)/.dev-installed
	mkdir -p $(CCIS_RUN)
	test -f $(CCIS_RUN)/captions.csv || $(BIN)/python main.py caption --input ../shared/data/kvasir-seg/images \
	    --masks ../shared/data/kvasir-seg/masks --out $(CCIS_RUN)/captions.csv --quiet
	$(BIN)/python main.py train --method ccis --preset compact --init-from training_runs/compact-anneal/model \
	    --input ../shared/data/kvasir-seg --captions $(CCIS_RUN)/captions.csv --run $(CCIS_RUN) --steps $(CCIS_STEPS) \
	    --keep-checkpoints 1 --threads $(CCIS_THREADS) --max-minutes $(CCIS_MINUTES) --to .bench/ccis-compact \
	    --name polypforge-ccis-compact

# The committed result of that run (training_runs/ccis-compact/controlnet) as a pixel-controlnet bundle, parity-checked,
# without training: `main.py --batch --model .bench/ccis-compact --captions CAPTIONS ...`.
ccis-compact-bundle: $(VENV)/.dev-installed
	$(BIN)/python -c "from pathlib import Path; from engine.export.compact_controlnet_export import export_compact_controlnet_bundle as export; \
	    export('$(CCIS_RUN)/controlnet', '.bench/ccis-compact', name='polypforge-ccis-compact', card=Path('$(CCIS_RUN)/controlnet/MODEL_CARD.md'))"

# `main.py evaluate --trainer ultralytics`: Ultralytics needs torchvision, which does not import beside the CPU
# torch pin, so it gets its own venv: torch 2.14.1 + torchvision 0.29.1 (the pair that installs and imports here;
# a CUDA build, about 5.5 GB) + ultralytics 8.4.190.
ULTRALYTICS_VENV ?= .venv-ultralytics
$(ULTRALYTICS_VENV)/.installed:
	$(PYTHON) -m venv $(ULTRALYTICS_VENV)
	$(ULTRALYTICS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(ULTRALYTICS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check ultralytics==8.4.190
	touch $@
ultralytics-env: $(ULTRALYTICS_VENV)/.installed

# The Ultralytics trainer's end-to-end test (needs ultralytics-env); CI runs it after make test.
test-ultralytics: $(VENV)/.dev-installed $(ULTRALYTICS_VENV)/.installed
	POLYPFORGE_ULTRALYTICS_PYTHON=$(ULTRALYTICS_VENV)/bin/python $(BIN)/python -m pytest -q tests/test_evaluate_ultralytics.py

# The learning curve on Kvasir-SEG (issue 27): real vs the default model's synthetic polyps vs copy-paste vs the
# model-harmonized transplant at 10 % and 25 % of the real frames, 5 seeds; resumable across sessions (finished runs'
# results are kept in evaluations/kvasir-curve/, committed; frames and weights stay in EVAL_WORK).
EVAL_WORK    ?= /tmp/polypforge-kvasir-curve
EVAL_THREADS ?= 2
evaluate-kvasir: $(VENV)/.dev-installed
	$(BIN)/python evaluations/kvasir_curve.py --work $(EVAL_WORK) --threads $(EVAL_THREADS)

clean:
	rm -rf $(VENV) demo_output samples .pytest_cache
