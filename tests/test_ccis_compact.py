"""`main.py train --method ccis --preset compact`: a compact CCIS ControlNet on a tiny random-weight compact base
(widths 8-16-32 at 32²) and generated frames with captions from `main.py caption`: at init base + ControlNet is
the base exactly; it learns; a stopped run resumed equals an uninterrupted one; the ablation switches remove their
modules and still train; the pixel-controlnet bundle runs torch-free equal to torch, keeps every byte outside the
mask, and the batch job prompts it with a captions file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_main

TINY = ["--threads", "1", "--quiet", "--held-out-fraction", "0.25", "--batch-size", "4", "--sample-steps", "2",
        "--lr", "1e-3"]


def _tiny_base(folder: Path, stem: int = 1, seed: int = 0):
    from engine.models.compact_unet import CompactConfig, CompactInpaintUNet, save_compact_model
    from engine.training.compact_task import CompactTaskConfig

    torch.manual_seed(seed)
    config = CompactConfig(widths=(8, 16, 32), stem=stem, attention_levels=(2,))
    base = CompactInpaintUNet(config)
    with torch.no_grad():  # a random base with a zero output layer predicts 0 everywhere: make it speak
        for p in base.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    save_compact_model(base, CompactTaskConfig(resolution=32, model=config), folder)
    return base


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from engine.samples.frames import generate_sample_set

    root = tmp_path_factory.mktemp("ccis_compact")
    corpus = root / "corpus"
    generate_sample_set(corpus, count=8, seed=7, width=128, height=96, with_polyps_every=1)
    captions = root / "captions.csv"
    done = run_main(["caption", "--input", corpus / "images", "--masks", corpus / "masks", "--out", captions, "--quiet"])
    assert done.returncode == 0, done.stderr[-2000:]
    _tiny_base(root / "base")
    return {"root": root, "corpus": corpus, "captions": captions, "base": root / "base"}


def _task(setup, **changes):
    from engine.training.ccis_compact_task import CCISCompactTask, CCISCompactTaskConfig
    from engine.models.compact_unet import load_compact_model
    from engine.training.corpus import load_corpus

    base, _ = load_compact_model(setup["base"])
    corpus = load_corpus([setup["corpus"]], [], held_out_fraction=0.25)
    config = CCISCompactTaskConfig(resolution=32, model=base.config, batch_size=4, captions=str(setup["captions"]),
                                   init_from=str(setup["base"]), sample_steps=2, **changes)
    return CCISCompactTask(corpus, config)


def _train(setup, run: Path, *extra):
    return run_main(["train", "--method", "ccis", "--preset", "compact", "--input", setup["corpus"], "--captions",
                     setup["captions"], "--init-from", setup["base"], "--run", run, *TINY, *extra])


def _perturbed(model, scale=0.05, seed=1):
    """A just-initialised ControlNet adds exactly 0: perturb its weights so the comparisons see it."""
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        for p in model.controlnet.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return model


def _inputs(batch=2, size=32, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 7, size, size, generator=g)
    sample[:, 6:] = (sample[:, 6:] > 0).float()
    return (sample, torch.tensor([10.0, 700.0])[:batch], torch.tensor([1, 0])[:batch],
            torch.randint(0, vocab, (batch, 32), generator=g))


# ---------------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("stem", [1, 2])
def test_at_init_base_plus_controlnet_is_the_base_exactly(tmp_path, stem):
    from engine.models.compact_controlnet import CompactControlledUNet, CompactControlNet, CompactControlNetConfig

    base = _tiny_base(tmp_path / "base", stem=stem)
    sample, t, labels, ids = _inputs()
    with torch.no_grad():
        expected = base(sample, t, labels)
    assert expected.abs().max() > 0
    for blur in (True, False):
        for aware in (True, False):
            config = CompactControlNetConfig(vocab_size=20, blur_mask_weighting=blur, text_aware_attention=aware)
            model = CompactControlledUNet(base, CompactControlNet.from_base(base, config))
            with torch.no_grad():
                assert torch.equal(model(sample, t, labels, ids), expected), (blur, aware)
            # the branch is a copy of the base's encoder, and only the ControlNet trains
            assert torch.equal(model.controlnet.conv_in.weight, base.conv_in.weight)
            assert not any(p.requires_grad for p in model.base.parameters())
    _perturbed(model)
    with torch.no_grad():
        assert not torch.allclose(model(sample, t, labels, ids), expected)  # the residuals reach the base


def test_text_relevance_is_a_per_image_min_max_map_and_reweights_keys():
    from engine.models.compact_controlnet import TextBlock, text_relevance

    g = torch.Generator().manual_seed(0)
    s = text_relevance(torch.randn(2, 4, 16, 8, generator=g), torch.randn(2, 4, 5, 8, generator=g))
    assert s.shape == (2, 16)
    assert torch.allclose(s.amin(dim=1), torch.zeros(2)) and torch.allclose(s.amax(dim=1), torch.ones(2))
    aware, plain = TextBlock(16, 8, 4, 4, text_aware=True), TextBlock(16, 8, 4, 4, text_aware=False)
    plain.load_state_dict(aware.state_dict())  # the switch adds no weights
    with torch.no_grad():
        for p in aware.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    plain.load_state_dict(aware.state_dict())
    x, text = torch.randn(2, 16, 4, 4, generator=g), torch.randn(2, 5, 8, generator=g)
    with torch.no_grad():
        assert not torch.allclose(aware(x, text), plain(x, text))


def test_the_word_vocabulary_is_deterministic_and_pads_to_32(tmp_path):
    from engine.text.word_tokenizer import WordTokenizer

    tok = WordTokenizer.from_texts(["The polyp is Pale, small.", "a red-ish polyp 5 mm"])
    assert tok.words[:2] == ["<pad>", "<unk>"] and tok.words[2:] == sorted(tok.words[2:])
    ids = tok(["pale polyp", "", "blue polyp"])
    assert ids.shape == (3, 32) and ids.dtype == np.int64
    assert ids[0, 0] == tok.index["pale"] and ids[0, 2] == 0 and not ids[1].any() and ids[2, 0] == 1
    (tmp_path / "vocab.json").write_bytes(tok.to_bytes())
    assert WordTokenizer.from_file(tmp_path / "vocab.json").words == tok.words


# ---------------------------------------------------------------------------------------------- training
def test_captions_and_dropout_feed_the_batch(setup):
    task = _task(setup)
    batch = task.make_batch(0, np.random.default_rng(0))
    assert batch["tokens"].shape == (4, 32) and batch["x0"].shape == (4, 3, 32, 32)
    dropped = [task.make_batch(s, np.random.default_rng(s))["tokens"] for s in range(20)]
    empty = sum(int((t == 0).all(dim=1).sum()) for t in dropped)
    assert 20 <= empty <= 60  # about half of 80 samples train with the empty caption
    assert task.tokenizer.size > 10 and "polyp" in task.tokenizer.index


def test_a_short_run_lowers_the_loss_on_a_fixed_batch_and_the_base_stays_frozen(setup):
    task = _task(setup)
    torch.manual_seed(0)
    model = task.build_model()
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    batch = task.make_batch(0, np.random.default_rng(5))
    optimizer = torch.optim.AdamW(task.trainable_parameters(model), lr=3e-3)

    def fixed_loss():
        with torch.no_grad():
            return float(task.loss(model, batch, torch.Generator().manual_seed(9))[0])

    before = fixed_loss()
    for _ in range(30):  # the same batch and noise: the ControlNet alone can fit it (the base is frozen)
        loss, _ = task.loss(model, batch, torch.Generator().manual_seed(9))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert fixed_loss() < 0.8 * before
    assert all(torch.equal(v, base_before[k]) for k, v in model.base.state_dict().items())


def test_a_run_stopped_at_step_k_then_resumed_equals_an_uninterrupted_one(setup, tmp_path):
    from safetensors.torch import load_file

    common = ["--checkpoint-every", "2", "--sample-every", "0", "--validate-every", "0", "--no-export"]
    whole = _train(setup, tmp_path / "whole", "--steps", "4", *common)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = _train(setup, tmp_path / "split", "--steps", "2", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _train(setup, tmp_path / "split", "--steps", "4", *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-00000004" / "tensors.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000004" / "tensors.safetensors"))
    keys = [k for k in a if k.startswith("model.controlnet.")]
    assert keys and any("blur_encoder" in k for k in keys)
    for key in a:
        if key.startswith("model."):
            assert torch.equal(a[key], b[key]), key
    refused = _train(setup, tmp_path / "split", "--steps", "6", *common, "--no-text-attention")
    assert refused.returncode == 2 and "other settings" in refused.stderr


def test_ablation_switches_remove_their_modules_and_still_train(setup, tmp_path):
    full = _task(setup).build_model().controlnet
    assert hasattr(full, "blur_encoder") and all(b.text_aware for b in full.text_blocks.values())
    assert len(full.text_blocks) == 2  # the two lowest-resolution levels
    ablated = _task(setup, blur_mask_weighting=False, text_aware_attention=False).build_model().controlnet
    assert not any(hasattr(ablated, n) for n in ("blur", "blur_encoder", "blur_weighting"))
    assert not any(b.text_aware for b in ablated.text_blocks.values())
    assert not any(k.startswith("blur") for k in ablated.state_dict())
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    done = _train(setup, run, "--steps", "3", "--sample-every", "0", "--validate-every", "0", "--log-every", "1",
                  "--no-blur-weighting", "--no-text-attention", "--to", bundle)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [json.loads(l)["loss"] for l in (run / "log.jsonl").read_text().splitlines() if "loss" in l]
    assert losses and all(np.isfinite(losses))
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["controlnet"]["blur_mask_weighting"] is False
    assert manifest["controlnet"]["text_aware_attention"] is False


# ---------------------------------------------------------------------------------------------- bundle, engine, job
@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory):
    """A 2-step CLI run exported with --to, and a perturbed copy of its model (exported too) that the tests compare."""
    root = tmp_path_factory.mktemp("ccis_compact_bundle")
    run, bundle = root / "run", root / "bundle"
    done = _train(setup, run, "--steps", "2", "--sample-every", "2", "--validate-every", "2", "--to", bundle)
    assert done.returncode == 0, done.stderr[-3000:]
    from engine.models.compact_controlnet import load_controlled_model, save_controlled_model
    from engine.export.compact_controlnet_export import export_compact_controlnet_bundle
    from engine.training.ccis_compact_task import CCISCompactTaskConfig

    model, tokenizer, config = load_controlled_model(run / "controlnet")
    _perturbed(model)
    task_config = CCISCompactTaskConfig(**{k: v for k, v in config["task"].items() if k not in ("model",)})
    task_config.model = model.base.config
    save_controlled_model(model, tokenizer, task_config, root / "perturbed")
    export_compact_controlnet_bundle(root / "perturbed", root / "perturbed-bundle", log=lambda _: None)
    return {"run": run, "bundle": bundle, "model": model, "tokenizer": tokenizer, "config": config,
            "perturbed_bundle": root / "perturbed-bundle"}


def test_train_writes_the_run_and_a_parity_checked_bundle(trained):
    run, bundle = trained["run"], trained["bundle"]
    for name in ("MODEL_CARD.md", "log.jsonl", "samples/step-00000002.png", "controlnet/config.json",
                 "controlnet/model.safetensors", "controlnet/vocab.json"):
        assert (run / name).is_file(), name
    assert "ccis-compact-controlnet" in (run / "MODEL_CARD.md").read_text()
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["kind"] == "pixel-controlnet" and "tokenizer/vocab.json" in manifest["files"]
    assert "MODEL_CARD.md" in manifest["files"]
    assert all(manifest["parity"][r]["max_abs_error"] < 1e-4 for r in ("text_encoder", "controlnet", "unet", "chained"))
    assert any("val_loss" in l for l in (run / "log.jsonl").read_text().splitlines())


def test_the_engine_equals_torch_and_keeps_every_byte_outside_the_mask(trained):
    from engine.pipelines import open_pipeline
    from engine.training.ccis_compact_task import sample_controlled
    from engine.training.captions import contrasting_caption

    pipe = open_pipeline(trained["perturbed_bundle"], purpose="inpaint")
    model, tokenizer, config = trained["model"], trained["tokenizer"], trained["config"]
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    mask = np.zeros((80, 100), bool)
    mask[30:50, 40:66] = True
    prepared = pipe.prepare_frame(frame, mask)
    assert prepared.inpaint_area == "region"
    w, h = prepared.working_size
    noise = rng.standard_normal((1, 3, h, w)).astype(np.float32)
    caption = "The polyp is pale, smooth, small, round and raised, at the top right."
    raws = []
    for prompt, guidance in ((caption, 3.0), (contrasting_caption(caption), 3.0), (caption, 1.0)):
        result = pipe.generate_variants(prepared, [0], prompt=prompt, latents=[noise], steps=4,
                                        guidance_scale=guidance)[0]
        reference = sample_controlled(model, torch.from_numpy(prepared.image), torch.from_numpy(prepared.work_mask),
                                      torch.tensor([1]), torch.from_numpy(tokenizer([prompt])),
                                      torch.from_numpy(tokenizer([""])), torch.from_numpy(noise),
                                      config["task"]["scheduler"], 4, guidance)
        reference = (reference.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).numpy()[0]
        assert np.abs(reference - result.raw).max() < 1e-4
        assert np.array_equal(result.image[~mask], frame[~mask])
        assert not np.array_equal(result.image[mask], frame[mask])
        raws.append(result.raw)
    assert np.abs(raws[0] - raws[1]).max() > 1e-4  # the caption's words reach the image


def test_the_batch_job_prompts_the_bundle_with_the_captions_file(setup, trained, tmp_path):
    import main

    from engine.dataset.captions import read_captions

    output = tmp_path / "dataset"
    code = main.main(["--batch", "--input", str(setup["corpus"]), "--output", str(output), "--model",
                      str(trained["perturbed_bundle"]), "--captions", str(setup["captions"]), "--steps", "2", "--quiet"])
    assert code == 0
    records = [json.loads(l) for l in (output / "manifest.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 8
    captions = read_captions(setup["captions"])
    for record in ok:
        assert record["bundle_kind"] == "pixel-controlnet" and record["prompt_source"] == "captions"
        assert record["prompt"] == captions[Path(record["source_frame"]).stem]
        assert record["captions"] == str(setup["captions"]) and record["inpaint_area"] == "region"
        assert (output / record["image"]).is_file()
    removal = main.main(["--batch", "--input", str(setup["corpus"]), "--output", str(tmp_path / "r"), "--model",
                         str(trained["perturbed_bundle"]), "--mode", "remove", "--steps", "1", "--quiet"])
    assert removal == 2


def test_bad_inputs_give_one_line(setup, tmp_path):
    base_args = ["train", "--method", "ccis", "--preset", "compact", "--input", setup["corpus"], "--run",
                 tmp_path / "run", *TINY, "--steps", "1", "--no-export"]
    for extra, expected in ((["--init-from", setup["base"]], "--captions"),
                            (["--captions", setup["captions"]], "--init-from"),
                            (["--captions", setup["captions"], "--init-from", setup["base"], "--widths", "8,16"],
                             "architecture from the base"),
                            (["--captions", setup["captions"], "--init-from", tmp_path], "not a compact model folder")):
        done = run_main([*base_args, *extra])
        assert done.returncode == 2 and expected in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) <= 2, done.stderr
