"""`main.py train` on tiny models and generated frames: Polyp-Gen's pairs, the losses, learning, exact resume
after kill -9, export to a pixel-inpaint bundle that the torch-free engine runs equal to its torch original."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_main, run_main_in_a_fresh_process

from engine.training.pairs import convex_polygon_in_box, dark_area, normal_region_box, polygon_mask, visible_area

REPO = Path(__file__).resolve().parent.parent
TINY_ARGS = ["--resolution", "32", "--widths", "8,16", "--blocks", "1", "--stem", "2", "--attention-levels", "1",
             "--batch-size", "4", "--threads", "1", "--quiet", "--held-out-fraction", "0.25"]


@pytest.fixture(scope="module")
def sample_corpus(tmp_path_factory) -> Path:
    from engine.samples.frames import generate_sample_set

    folder = tmp_path_factory.mktemp("corpus")
    generate_sample_set(folder, count=12, seed=3, width=160, height=128, with_polyps_every=1)
    return folder


# ---------------------------------------------------------------------------------------------- pairs
def test_bpm_polygons_are_convex_inside_their_box():
    rng = np.random.default_rng(0)
    for _ in range(500):
        x0, y0 = rng.uniform(0, 200, 2)
        box = (x0, y0, x0 + rng.uniform(6, 150), y0 + rng.uniform(6, 150))
        points = convex_polygon_in_box(box, rng)
        assert 5 <= len(points) <= 12
        assert (points[:, 0] >= box[0] - 1e-6).all() and (points[:, 0] <= box[2] + 1e-6).all()
        assert (points[:, 1] >= box[1] - 1e-6).all() and (points[:, 1] <= box[3] + 1e-6).all()
        # convex: every turn has the same sign
        edges = np.roll(points, -1, axis=0) - points
        cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
        assert (cross >= -1e-6).all() or (cross <= 1e-6).all()
        # boundary-enhanced: the polygon fills a good part of its box
        mask = polygon_mask(points, 400, 400)
        assert mask.sum() >= 0.35 * (box[2] - box[0]) * (box[3] - box[1])


def test_normal_regions_never_touch_a_polyp_box():
    rng = np.random.default_rng(1)
    frame = np.full((240, 320, 3), 150, np.uint8)
    frame[:, :20] = 0  # the black endoscope border
    visible = visible_area(frame)
    found = 0
    for _ in range(300):
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 260), rng.uniform(0, 180)
            boxes.append((x, y, x + rng.uniform(10, 60), y + rng.uniform(10, 60)))
        box = normal_region_box(240, 320, boxes, visible, rng)
        if box is None:
            continue
        found += 1
        region = polygon_mask(convex_polygon_in_box(box, rng), 240, 320)
        for b in boxes:
            x0, y0, x1, y1 = (int(np.floor(b[0])), int(np.floor(b[1])), int(np.ceil(b[2])), int(np.ceil(b[3])))
            assert not region[y0:y1, x0:x1].any()
        assert not region[:, :20].any()
    assert found > 200


def test_lesion_guided_loss_equals_hand_computation():
    from engine.training.objectives import inpainting_loss

    prediction = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [3.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # squared errors: channel 0 [1, 4, 0, 0], channel 1 [0, 0, 9, 0]; mask covers pixels (0,0) and (1,1)
    # plain MSE: (1 + 4 + 9) / 8; inside the mask: (1 + 0 + 0 + 0) / (2 channels · 2 pixels)
    loss, parts = inpainting_loss(prediction, target, mask, lg_weight=0.5)
    assert parts["mse"] == pytest.approx(14 / 8)
    assert parts["mse_in_mask"] == pytest.approx(1 / 4)
    assert float(loss) == pytest.approx(14 / 8 + 0.5 * 1 / 4)
    # outside weight 0.1: Σ w·e² / (C·Σ w) = (1 + 0.1·4 + 0.1·9 + 0) / (2 · (1 + 0.1 + 0.1 + 1))
    loss, parts = inpainting_loss(prediction, target, mask, lg_weight=0.0, outside_weight=0.1)
    assert float(loss) == pytest.approx((1 + 0.4 + 0.9) / (2 * 2.2))


# ---------------------------------------------------------------------------------------------- learning
def _tiny_task(sample_corpus):
    from engine.models.compact_unet import CompactConfig
    from engine.training.compact_task import CompactInpaintTask, CompactTaskConfig
    from engine.training.corpus import load_corpus

    corpus = load_corpus([sample_corpus], held_out_fraction=0.25)
    config = CompactTaskConfig(resolution=32, batch_size=8, model=CompactConfig(widths=(8, 16), blocks=1, stem=2,
                                                                               attention_levels=(1,)))
    return CompactInpaintTask(corpus, config, grid_rows=4)


def test_normal_regions_can_be_wider_and_kept_off_the_lumen():
    """--normal-sizes widens the Normal regions (large removals); --normal-max-dark keeps them off the lumen, so
    the model learns to fill a removed polyp with mucosa, not with a new dark hole."""
    frame = np.full((400, 400, 3), 150, np.uint8)
    frame[150:250, 150:250] = 40  # the lumen, in the middle (dark, yet above the black border's level)
    visible, dark = visible_area(frame), dark_area(frame)
    rng = np.random.default_rng(3)
    plain = [normal_region_box(400, 400, [], visible, rng, size_range=(0.12, 0.7), dark=dark, max_dark=0.05)
             for _ in range(300)]
    plain = [b for b in plain if b is not None]
    assert len(plain) > 100
    for x0, y0, x1, y1 in plain:
        assert dark[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))].mean() <= 0.05
    any_box = [normal_region_box(400, 400, [], visible, rng, size_range=(0.12, 0.7)) for _ in range(300)]
    assert any(dark[int(b[1]):int(np.ceil(b[3])), int(b[0]):int(np.ceil(b[2]))].mean() > 0.05 for b in any_box if b)
    sides = [max(b[2] - b[0], b[3] - b[1]) / 400 for b in any_box if b]
    assert max(sides) > 0.5 and min(sides) >= 0.12 * 0.7  # beyond the default 0.40; never under the low end


def test_normal_region_options_reach_the_task_and_are_refused_elsewhere(tmp_path):
    from engine.training.compact_task import CompactTaskConfig

    assert "normal_size_range" not in CompactTaskConfig().to_json()  # earlier runs' settings still match
    wide = CompactTaskConfig(normal_size_range=(0.12, 0.7), normal_max_dark=0.05).to_json()
    assert wide["normal_size_range"] == [0.12, 0.7] and wide["normal_max_dark"] == 0.05
    refused = run_main(["train", "--method", "detail", "--preset", "compact", "--input", tmp_path,
                        "--normal-max-dark", "0.05", "--run", tmp_path / "run"])
    assert refused.returncode == 2 and "--normal-max-dark shapes the Normal regions" in refused.stderr, refused.stderr
    refused = run_main(["train", "--method", "detail", "--preset", "compact", "--input", tmp_path,
                        "--schedule-shift", "2", "--run", tmp_path / "run"])
    assert refused.returncode == 2 and "--schedule-shift shifts the noise schedule of" in refused.stderr
    stemless = run_main(["train", "--preset", "compact", "--input", tmp_path, "--stem", "1", "--cell-shortcut",
                         "--run", tmp_path / "run"])
    assert stemless.returncode == 2 and "needs --stem 2" in stemless.stderr, stemless.stderr
    bad = run_main(["train", "--preset", "compact", "--input", tmp_path, "--normal-sizes", "0.7,0.1"])
    assert bad.returncode == 2 and "0 < LOW < HIGH < 1" in bad.stderr


def test_pairs_follow_the_labels(sample_corpus):
    task = _tiny_task(sample_corpus)
    batch = task.make_batch(0, np.random.default_rng(0))
    assert batch["x0"].shape == (8, 3, 32, 32) and batch["mask"].shape == (8, 1, 32, 32)
    assert batch["x0"].min() >= -1 and batch["x0"].max() <= 1
    assert set(batch["labels"].tolist()) <= {0, 1, 2}
    covered = batch["mask"].flatten(1).mean(1)
    assert (covered > 0.05).all() and (covered < 0.9).all()  # the region has context around it
    again = task.make_batch(0, np.random.default_rng(0))
    assert torch.equal(batch["x0"], again["x0"]) and torch.equal(batch["mask"], again["mask"])


def test_a_few_dozen_steps_lower_the_loss_on_a_fixed_batch(sample_corpus):
    task = _tiny_task(sample_corpus)
    torch.manual_seed(0)
    model = task.build_model()
    batch = task.make_batch(0, np.random.default_rng(5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def fixed_loss():
        with torch.no_grad():
            return float(task.loss(model, batch, torch.Generator().manual_seed(9))[0])

    before = fixed_loss()
    for step in range(60):
        loss, _ = task.loss(model, batch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert fixed_loss() < 0.75 * before


# ---------------------------------------------------------------------------------------------- CLI, kill, resume
def _train(args):
    """`main.py train ARGS` in this process; only a run the test kills needs a subprocess of its own."""
    return run_main(["train", *args])


# Loader workers are forked: from a fresh process, as under `main.py train`, never from this test process. A
# pytest-xdist worker holds the thread pools of every test it ran before (onnxruntime's, OpenCV's, torch's), and a fork
# beside live threads can leave a child, or the fork itself, waiting on a lock no thread will release.
def _train_in_a_fresh_process(args):
    return run_main_in_a_fresh_process(["train", *args])


def _in_a_fresh_process(function, *args):
    """One of this module's functions, called in a new interpreter with string arguments."""
    code = (f"import sys; sys.path[:0] = [{str(REPO / 'tests')!r}, {str(REPO)!r}]; import test_training_compact; "
            f"test_training_compact.{function.__name__}(*sys.argv[1:])")
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_kill_9_then_resume_equals_uninterrupted(sample_corpus, tmp_path):
    from safetensors.torch import load_file

    common = ["--preset", "compact", "--input", str(sample_corpus), *TINY_ARGS, "--steps", "24",
              "--checkpoint-every", "4", "--sample-every", "0", "--validate-every", "0", "--no-export"]
    whole = _train([*common, "--run", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-2000:]

    run = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(REPO / "main.py"), "train", *common, "--run", str(run)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (run / "checkpoints" / "step-00000008").is_dir():
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert done and "step-00000024" not in done, done
    resumed = _train([*common, "--run", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-00000024" / "tensors.safetensors"))
    b = load_file(str(run / "checkpoints" / "step-00000024" / "tensors.safetensors"))
    model_keys = [k for k in a if k.startswith(("model.", "ema."))]
    assert model_keys
    for key in model_keys:
        assert torch.equal(a[key], b[key]), key


def test_loader_workers_train_the_same_weights_as_the_loop_alone(sample_corpus, tmp_path):
    """--loader-workers builds the batches in forked processes, ahead of the loop: the run (with attributes, whose
    captions are measured once before the fork) ends at the same weights bit for bit, also when it is resumed half
    way without workers."""
    from safetensors.torch import load_file

    common = ["--preset", "compact", "--input", str(sample_corpus), *TINY_ARGS, "--attributes",
              "--checkpoint-every", "4", "--sample-every", "0", "--validate-every", "0", "--no-export"]
    alone = _train([*common, "--steps", "12", "--run", str(tmp_path / "alone")])
    assert alone.returncode == 0, alone.stderr[-2000:]
    ahead = _train_in_a_fresh_process([*common, "--steps", "12", "--loader-workers", "2", "--run", tmp_path / "ahead"])
    assert ahead.returncode == 0, ahead.stderr[-2000:]
    half = _train_in_a_fresh_process([*common, "--steps", "6", "--loader-workers", "3", "--run", tmp_path / "half"])
    assert half.returncode == 0, half.stderr[-2000:]
    rest = _train([*common, "--steps", "12", "--run", str(tmp_path / "half")])
    assert rest.returncode == 0, rest.stderr[-2000:]

    def weights(run):
        tensors = load_file(str(tmp_path / run / "checkpoints" / "step-00000012" / "tensors.safetensors"))
        return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}

    reference = weights("alone")
    assert reference
    for run in ("ahead", "half"):
        other = weights(run)
        assert other.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(value, other[key]), (run, key)


def test_loader_workers_hand_out_the_batches_of_their_steps(sample_corpus):
    _in_a_fresh_process(_prefetched_batches_equal_the_steps_own, sample_corpus)


def _prefetched_batches_equal_the_steps_own(sample_corpus):
    from engine.training.loop import step_rng
    from engine.training.prefetch import BatchPrefetcher

    task = _tiny_task(Path(sample_corpus))
    prefetcher = BatchPrefetcher(task, step_rng, workers=2, seed=5, depth=3)
    try:
        prefetcher.start(first_step=3, last_step=6, grad_accum=2)
        for step in range(3, 6):
            for micro in range(2):
                got = prefetcher.get(step, micro)
                expected = task.make_raw_batch(step, step_rng(5, step, micro, 0))
                assert got.keys() == expected.keys()
                for key in expected:
                    assert np.array_equal(got[key], expected[key]), (step, micro, key)
        # asked out of order (past the planned steps): still the step's own batch
        late = prefetcher.get(9, 0)
        assert np.array_equal(late["images"], task.make_raw_batch(9, step_rng(5, 9, 0, 0))["images"])
    finally:
        prefetcher.close()


def test_train_exports_a_bundle_the_engine_runs_like_torch(sample_corpus, tmp_path):
    from engine.pipelines.compact import CompactInpaintPipeline
    from engine.models.compact_unet import load_compact_model
    from engine.training.compact_task import sample_inpaint

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    completed = _train(["--preset", "compact", "--input", str(sample_corpus), *TINY_ARGS, "--steps", "6",
                        "--sample-every", "3", "--validate-every", "3", "--checkpoint-every", "3", "--log-every", "1",
                        "--run", str(run), "--to", str(bundle)])
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in ("MODEL_CARD.md", "model_card.json", "log.jsonl", "loss.png", "samples/step-00000006.png",
                 "model/config.json", "model/model.safetensors", "model/held_out_frames.txt"):
        assert (run / name).is_file(), name
    card = (run / "MODEL_CARD.md").read_text()
    assert "6 optimiser steps" in card and "not a medical device" in card
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["kind"] == "pixel-inpaint" and "MODEL_CARD.md" in manifest["files"]
    assert manifest["parity"]["unet"]["max_abs_error"] < 1e-4
    # what it trained on, by content, travels with the bundle: every training frame of the corpus, none held out
    from engine.bundle.format import read_bundle
    from engine.bundle.hashing import sha256_of_file
    from engine.bundle.training_frames import training_frames_of

    trained = training_frames_of(read_bundle(bundle))
    held = set((run / "model" / "held_out_frames.txt").read_text().split())
    frames = sorted((sample_corpus / "images").iterdir())
    assert "training_frames.txt" in manifest["files"] and manifest["training_frames"]["count"] == len(trained)
    assert trained.sha256 == {sha256_of_file(f) for f in frames if f.stem not in held}

    model, _ = load_compact_model(run / "model")
    with torch.no_grad():  # a trained-for-6-steps model is near its zero-initialised output: make it speak
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    from engine.models.compact_unet import save_compact_model
    from engine.training.compact_task import CompactTaskConfig
    from engine.export.compact_export import export_compact_bundle

    config = json.loads((run / "model" / "config.json").read_text())["task"]
    task_config = CompactTaskConfig(resolution=config["resolution"], scheduler=config["scheduler"])
    save_compact_model(model, task_config, tmp_path / "perturbed")
    export_compact_bundle(tmp_path / "perturbed", tmp_path / "perturbed-bundle", log=lambda _: None)
    pipe = CompactInpaintPipeline.from_bundle(tmp_path / "perturbed-bundle")

    rng = np.random.default_rng(4)
    frame = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    mask = np.zeros((80, 100), bool)
    mask[30:50, 40:66] = True
    prepared = pipe.prepare_frame(frame, mask)  # region mode: the bundle's default
    assert prepared.inpaint_area == "region" and prepared.crop != (0, 0, 100, 80)
    w, h = prepared.working_size
    noise = rng.standard_normal((1, 3, h, w)).astype(np.float32)
    for prompt, label, guidance in (("Polyp", 1, 2.0), ("normal", 2, 1.0)):
        result = pipe.generate_variants(prepared, [0], prompt=prompt, latents=[noise], steps=6, guidance_scale=guidance)[0]
        reference = sample_inpaint(model, torch.from_numpy(prepared.image), torch.from_numpy(prepared.work_mask),
                                   torch.tensor([label]), torch.from_numpy(noise), task_config.scheduler, 6, guidance)
        reference = (reference.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).numpy()[0]
        assert np.abs(reference - result.raw).max() < 1e-4
        assert np.array_equal(result.image[~mask], frame[~mask])
        assert not np.array_equal(result.image[mask], frame[mask])
        assert result.settings["region_crop"] == list(prepared.crop)
    from engine.errors import InputError

    with pytest.raises(InputError, match="Polyp"):
        pipe.generate_variants(prepared, [0], prompt="a red polyp", steps=2)


def test_batch_job_runs_a_pixel_inpaint_bundle_in_region_mode(sample_corpus, tmp_path):
    import main

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert _train(["--preset", "compact", "--input", str(sample_corpus), *TINY_ARGS, "--steps", "2",
                   "--sample-every", "0", "--validate-every", "0", "--run", str(run), "--to", str(bundle)]).returncode == 0
    output = tmp_path / "dataset"
    code = main.main(["--batch", "--input", str(sample_corpus), "--output", str(output), "--model", str(bundle),
                      "--steps", "3", "--quiet", "--region-padding", "12"])
    assert code == 0
    records = [json.loads(l) for l in (output / "manifest.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    assert ok and all(r["inpaint_area"] == "region" and len(r["region_crop"]) == 4 for r in ok)
    assert all(r["bundle"] == "bundle" for r in ok)
    coco = json.loads((output / "annotations" / "instances.json").read_text())
    assert len(coco["images"]) == len(ok)


def test_a_warm_start_begins_at_the_earlier_weights_and_its_card_counts_both_runs(sample_corpus, tmp_path):
    from safetensors.torch import load_file

    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--preset", "compact", "--input", str(sample_corpus), *TINY_ARGS, "--sample-every", "0",
              "--validate-every", "0", "--checkpoint-every", "2"]
    assert _train([*common, "--steps", "2", "--run", str(first)]).returncode == 0
    warm = _train([*common, "--steps", "2", "--run", str(second), "--init-from", str(first), "--lr", "0"])
    assert warm.returncode == 0, warm.stderr[-2000:]
    # lr 0: the warm-started run's raw weights are still exactly the first run's
    a = load_file(str(first / "checkpoints" / "step-00000002" / "tensors.safetensors"))
    b = load_file(str(second / "checkpoints" / "step-00000002" / "tensors.safetensors"))
    keys = [k for k in a if k.startswith("model.")]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)
    facts = json.loads((second / "model_card.json").read_text())["training"]
    assert facts["steps"] == 2 and facts["steps_in_all"] == 4 and facts["earlier"]["from"] == str(first.resolve())
    assert facts["hours_in_all"] >= facts["hours"]
    assert "in all, with the 2 steps" in (second / "MODEL_CARD.md").read_text()


def test_model_card_paths_inside_the_working_folder_are_written_relative(tmp_path):
    from engine.training.model_card import _relative_to_working_folder

    settings = {"captions": str(tmp_path / "runs" / "a" / "captions.csv"), "base": "/elsewhere/model",
                "nested": [str(tmp_path / "x.txt"), 3], "word": "pale"}
    relative = _relative_to_working_folder(settings, root=tmp_path)
    assert relative == {"captions": "runs/a/captions.csv", "base": "/elsewhere/model", "nested": ["x.txt", 3],
                        "word": "pale"}


def test_a_lifted_stem_computes_the_lower_resolution_model_on_averaged_cells():
    import torch.nn.functional as F

    from engine.models.compact_unet import CompactConfig, CompactInpaintUNet, lift_stem_weights

    torch.manual_seed(0)
    low = CompactInpaintUNet(CompactConfig(widths=(8, 16), groups=4, attributes=(("colour", ("pink", "red")),)))
    for p in low.parameters():  # zero-initialised heads would make any lift look exact
        torch.nn.init.normal_(p, std=0.1)
    high = CompactInpaintUNet(CompactConfig(widths=(8, 16), groups=4, stem=2, attributes=(("colour", ("pink", "red")),)))
    high.load_state_dict(lift_stem_weights(low.state_dict(), 2))
    x, t, labels = torch.randn(2, 7, 32, 32), torch.tensor([500.0]), torch.tensor([1, 2])
    asked = torch.tensor([[2], [0]])
    with torch.no_grad():
        expected = F.interpolate(low(F.avg_pool2d(x, 2), t, labels, attributes=asked), scale_factor=2, mode="nearest")
        got = high(x, t, labels, attributes=asked)
    assert expected.abs().mean() > 0.01
    assert (got - expected).abs().max() < 1e-5
    # a cell's pixels are read as their mean: a pattern inside every cell that keeps the means changes nothing
    wiggle = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(16, 16)
    with torch.no_grad():
        assert (high(x + wiggle, t, labels, attributes=asked) - got).abs().max() < 1e-5


def test_shifted_schedule_moves_log_snr_by_twice_the_log_of_the_shift():
    from engine.schedulers.common import betas_for_alpha_bar, cumprod_float32, shifted_cosine_betas

    assert np.array_equal(shifted_cosine_betas(1000, 1.0), betas_for_alpha_bar(1000))
    plain, shifted = (cumprod_float32(1 - b).astype(np.float64) for b in (betas_for_alpha_bar(1000),
                                                                              shifted_cosine_betas(1000, 2.0)))
    t = np.arange(10, 990)  # away from the clipped ends
    log_snr = lambda a: np.log(a[t] / (1 - a[t]))  # noqa: E731
    assert np.allclose(log_snr(plain) - log_snr(shifted), 2 * np.log(2.0), atol=0.02)
    with pytest.raises(ValueError, match="positive"):
        shifted_cosine_betas(1000, 0.0)


def test_a_64_model_warm_starts_a_stem_2_run_at_twice_the_resolution_on_a_shifted_schedule(sample_corpus, tmp_path):
    from safetensors.torch import load_file

    from engine.models.compact_unet import lift_stem_weights
    from engine.pipelines.compact import CompactInpaintPipeline
    from engine.schedulers.common import shifted_cosine_betas

    low, high, bundle = tmp_path / "low", tmp_path / "high", tmp_path / "bundle"
    shape = ["--preset", "compact", "--input", str(sample_corpus), "--widths", "8,16", "--blocks", "1",
             "--attention-levels", "", "--batch-size", "4", "--threads", "1", "--quiet", "--held-out-fraction", "0.25",
             "--sample-every", "0", "--validate-every", "0", "--checkpoint-every", "2", "--steps", "2"]
    assert _train([*shape, "--resolution", "16", "--stem", "1", "--run", str(low)]).returncode == 0
    lifted = _train([*shape, "--resolution", "32", "--stem", "2", "--schedule-shift", "2", "--cell-shortcut",
                     "--init-from", str(low / "model"), "--lr", "0", "--run", str(high), "--to", str(bundle)])
    assert lifted.returncode == 0, lifted.stderr[-2000:]
    assert "lifted to a stem of 2" in lifted.stdout + lifted.stderr
    start = lift_stem_weights(load_file(str(low / "model" / "model.safetensors")), 2)
    trained = load_file(str(high / "checkpoints" / "step-00000002" / "tensors.safetensors"))
    assert all(torch.equal(trained[f"model.{k}"], v) for k, v in start.items())  # lr 0: still the lifted weights
    gains = trained["model.cell_shortcut_gain"]  # measured on the crops, on the shifted schedule: bounded, not zero
    assert gains.shape == (1000,) and 0.5 < float(gains.max()) < 100
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["image_size"] == 32
    betas = manifest["scheduler"]["trained_betas"]
    assert np.allclose(betas, shifted_cosine_betas(1000, 2.0))
    config = json.loads((high / "model" / "config.json").read_text())["task"]
    assert config["schedule_shift"] == 2.0 and config["model"]["stem"] == 2 and config["model"]["cell_shortcut"] == 1000
    pipe = CompactInpaintPipeline.from_bundle(bundle)  # the engine samples on the shifted schedule
    from engine.schedulers import make_scheduler
    from engine.schedulers.common import cumprod_float32

    assert np.allclose(make_scheduler("ddim", pipe.scheduler_config).alphas_cumprod,
                       cumprod_float32(1 - shifted_cosine_betas(1000, 2.0)))
    frame = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    mask = np.zeros((64, 80), bool)
    mask[20:40, 30:50] = True
    result = pipe.generate_variants(pipe.prepare_frame(frame, mask), [0], prompt="Polyp", steps=3)[0]
    assert np.array_equal(result.image[~mask], frame[~mask])


def test_cell_shortcut_gains_are_the_best_linear_prediction_of_v_from_cell_detail():
    from engine.models.compact_unet import cell_shortcut_gains

    rng = np.random.default_rng(0)
    alphas_cumprod = torch.tensor([0.9999, 0.99, 0.9, 0.5, 0.1, 0.001])
    variance, stem = 0.003, 2
    gains = cell_shortcut_gains(alphas_cumprod, variance, stem).numpy()
    for a, gain in zip(alphas_cumprod.double().numpy(), gains):
        alpha, sigma = np.sqrt(a), np.sqrt(1 - a)
        # pixels minus their cell's mean, of a Gaussian clean detail and of white noise
        clean = rng.normal(0, np.sqrt(variance * 4 / 3), (200_000, 4))
        noise = rng.normal(0, 1, (200_000, 4))
        d0, de = clean - clean.mean(1, keepdims=True), noise - noise.mean(1, keepdims=True)
        d, v = alpha * d0 + sigma * de, alpha * de - sigma * d0
        regression = float((d * v).mean() / (d * d).mean())
        assert abs(regression - gain) < 0.03 * max(1.0, abs(gain)), (a, regression, gain)
    assert gains.max() < 1 / np.sqrt(variance)


def test_a_cell_shortcut_adds_the_noisy_detail_times_its_gain_and_exports_equal(tmp_path):
    import torch.nn.functional as F

    from engine.export.compact_export import export_compact_bundle
    from engine.models.compact_unet import CompactConfig, CompactInpaintUNet, lift_stem_weights, save_compact_model
    from engine.training.compact_task import CompactTaskConfig

    torch.manual_seed(0)
    low = CompactInpaintUNet(CompactConfig(widths=(8, 16), groups=4))
    for p in low.parameters():
        torch.nn.init.normal_(p, std=0.1)
    config = CompactConfig(widths=(8, 16), groups=4, stem=2, cell_shortcut=1000)
    high = CompactInpaintUNet(config)
    gains = torch.linspace(0, 5, 1000)
    high.load_state_dict({**lift_stem_weights(low.state_dict(), 2), "cell_shortcut_gain": gains})
    x, labels = torch.randn(2, 7, 32, 32), torch.tensor([1, 0])
    cells = lambda image: F.interpolate(F.avg_pool2d(image, 2), scale_factor=2, mode="nearest")  # noqa: E731
    with torch.no_grad():
        for t in (0, 17, 999):
            expected = F.interpolate(low(F.avg_pool2d(x, 2), torch.tensor([float(t)]), labels), scale_factor=2,
                                     mode="nearest") + gains[t] * (x[:, :3] - cells(x[:, :3]))
            assert (high(x, torch.tensor([float(t)]), labels) - expected).abs().max() < 1e-5
    assert CompactConfig.from_json(config.to_json()) == config
    assert "cell_shortcut" not in CompactConfig().to_json()  # earlier models' config.json unchanged
    with pytest.raises(ValueError, match="stem"):
        CompactInpaintUNet(CompactConfig(widths=(8, 16), groups=4, cell_shortcut=1000))
    save_compact_model(high, CompactTaskConfig(resolution=32, model=config), tmp_path / "model")
    manifest = json.loads((export_compact_bundle(tmp_path / "model", tmp_path / "bundle", log=lambda _: None)
                           / "bundle.json").read_text())
    assert manifest["parity"]["unet"]["max_abs_error"] < 1e-4  # the gain table and its lookup are in the ONNX graph


def test_the_model_card_line_shows_a_long_schedule_by_its_length():
    from engine.training.model_card import _shortened

    settings = {"scheduler": {"trained_betas": [0.001] * 999 + [0.999], "prediction_type": "v_prediction"},
                "padding_range": [0.15, 0.5]}
    shown = _shortened(settings)
    assert shown["scheduler"]["trained_betas"] == "1000 values, 0.001 to 0.999"
    assert shown["padding_range"] == [0.15, 0.5] and shown["scheduler"]["prediction_type"] == "v_prediction"
