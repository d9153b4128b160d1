"""Attribute conditioning of the compact model (issue 25 item 3): the attributes reach the model (torch, its ONNX
export, the torch-free pipeline) and are trained; a model or bundle without them is what it always was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.captioning.conditioning import MODEL_ATTRIBUTES
from engine.errors import InputError
from pipeline_helpers import prepared_random_frame, record_unet_feeds

TINY = dict(widths=(8, 16), blocks=1, stem=2, attention_levels=(1,))


def _tiny_config(attributes=MODEL_ATTRIBUTES):
    from engine.models.compact_unet import CompactConfig

    return CompactConfig(**TINY, attributes=attributes)


def _speaking(model, seed: int = 1):
    """A random-weight model that says something: every weight perturbed (the zero-initialised ones included),
    so the attribute embeddings are non-zero too (but for their "not asked" rows)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
        for embedding in getattr(model, "attribute_embeddings", {}).values():
            embedding.weight[0] = 0  # "not asked": the padding row, zero in any trained model
    return model.eval()


def _inputs(batch: int = 2, size: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 7, size, size, generator=generator)
    return sample, torch.tensor([999.0, 400.0][:batch]), torch.tensor([1, 1][:batch])


# ---------------------------------------------------------------------------------------------- the model
def test_config_round_trips_and_an_attribute_less_config_reads_as_before():
    from engine.models.compact_unet import CompactConfig

    config = _tiny_config()
    data = json.loads(json.dumps(config.to_json()))
    assert data["attributes"][0] == ["colour", ["pale", "pink", "red", "whitish"]]
    assert CompactConfig.from_json(data) == config
    plain = CompactConfig(**TINY)
    assert "attributes" not in plain.to_json()  # config.json and bundle.json's architecture as before
    old = plain.to_json()
    assert CompactConfig.from_json(old) == plain and CompactConfig.from_json(old).attributes == ()


def test_zero_initialised_attributes_leave_the_model_as_it_was():
    from engine.models.compact_unet import CompactInpaintUNet

    torch.manual_seed(3)
    plain = CompactInpaintUNet(_tiny_config(()))
    torch.manual_seed(3)
    with_attributes = CompactInpaintUNet(_tiny_config())
    state = with_attributes.state_dict()
    # built last: every other weight is drawn as the attribute-less model's from the same seed
    assert all(torch.equal(v, state[k]) for k, v in plain.state_dict().items())
    new = sorted(set(state) - set(plain.state_dict()))
    assert new == sorted(f"attribute_embeddings.{name}.weight" for name, _ in MODEL_ATTRIBUTES)
    assert all(not state[key].any() for key in new)
    # a warm start from trained attribute-less weights gives their outputs, whatever is asked
    plain = _speaking(plain)
    with_attributes.load_state_dict({**plain.state_dict(), **{k: state[k] for k in new}})
    sample, timestep, labels = _inputs()
    asked = torch.tensor([[3, 2, 1, 1, 2], [0, 0, 0, 0, 0]])
    with torch.no_grad():
        expected = plain(sample, timestep, labels)
        assert torch.equal(with_attributes.eval()(sample, timestep, labels, attributes=asked), expected)
        assert torch.equal(with_attributes(sample, timestep, labels), expected)


def test_other_attributes_give_other_outputs():
    from engine.models.compact_unet import CompactInpaintUNet

    torch.manual_seed(0)
    model = _speaking(CompactInpaintUNet(_tiny_config()))
    sample, timestep, labels = _inputs()
    with torch.no_grad():
        red = model(sample, timestep, labels, attributes=torch.tensor([[3, 0, 0, 0, 0]] * 2))
        pale = model(sample, timestep, labels, attributes=torch.tensor([[1, 0, 0, 0, 0]] * 2))
        none = model(sample, timestep, labels, attributes=torch.zeros(2, 5, dtype=torch.long))
        unasked = model(sample, timestep, labels)
    assert (red - pale).abs().max() > 1e-3
    assert torch.allclose(none, unasked, atol=1e-6) and not torch.allclose(none, red)
    with pytest.raises(ValueError, match="colour, surface, size, outline, elevation"):
        model(sample, timestep, labels, attributes=torch.zeros(2, 3, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- export + engine
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random-weight compact model trained-with-attributes in shape (non-zero embeddings), its folder and
    its bundle."""
    from engine.export.compact_export import export_compact_bundle
    from engine.models.compact_unet import CompactInpaintUNet, save_compact_model
    from engine.training.compact_task import CompactTaskConfig

    folder = tmp_path_factory.mktemp("attributes")
    torch.manual_seed(0)
    model = _speaking(CompactInpaintUNet(_tiny_config()), seed=5)
    task = CompactTaskConfig(resolution=32, model=model.config, attributes=True)
    save_compact_model(model, task, folder / "model")
    export_compact_bundle(folder / "model", folder / "bundle", log=lambda _: None)
    return model, task, folder / "bundle"


def test_the_bundle_says_its_attributes_and_its_onnx_takes_them_like_torch(exported):
    import onnxruntime as ort

    model, _, bundle = exported
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["attributes"] == {"names": [n for n, _ in MODEL_ATTRIBUTES],
                                      "values": {n: list(v) for n, v in MODEL_ATTRIBUTES}}
    assert manifest["parity"]["unet"]["max_abs_error"] < 1e-4
    session = ort.InferenceSession(str(bundle / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["sample", "timestep", "class_labels", "attributes"]
    sample, timestep, labels = _inputs(size=48)
    outputs = []
    for asked in ([[3, 2, 1, 1, 2], [1, 1, 3, 2, 1]], [[1, 3, 2, 3, 0], [0, 0, 0, 0, 0]]):
        asked = torch.tensor(asked)
        with torch.no_grad():
            expected = model(sample, timestep, labels, attributes=asked).numpy()
        (actual,) = session.run(["out_sample"], {"sample": sample.numpy(), "timestep": timestep.numpy(),
                                                 "class_labels": labels.numpy(), "attributes": asked.numpy()})
        assert np.abs(actual - expected).max() <= 1e-4 + 1e-3 * np.abs(expected).max()
        outputs.append(actual)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3


def _prepared(pipe):
    return prepared_random_frame(pipe)


def test_the_pipeline_feeds_the_attributes_asked_and_records_them(exported):
    from engine.pipelines.compact import CompactInpaintPipeline
    from engine.training.compact_task import sample_inpaint

    model, task, bundle = exported
    pipe = CompactInpaintPipeline.from_bundle(bundle)
    prepared, noise = _prepared(pipe)
    asked = {"colour": "red", "surface": "lobulated", "size": "small"}
    red = pipe.generate_variants(prepared, [0], latents=[noise], steps=4, guidance_scale=2.0, attributes=asked)[0]
    assert red.settings["attributes"] == asked and red.settings["attribute_indices"] == [3, 2, 2, 0, 0]
    reference = sample_inpaint(model, torch.from_numpy(prepared.image), torch.from_numpy(prepared.work_mask),
                               torch.tensor([1]), torch.from_numpy(noise), task.scheduler, 4, 2.0,
                               attributes=torch.tensor([[3, 2, 2, 0, 0]]))
    reference = (reference.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).numpy()[0]
    assert np.abs(reference - red.raw).max() < 1e-4
    pale = pipe.generate_variants(prepared, [0], latents=[noise], steps=4, guidance_scale=2.0,
                                  attributes={"colour": "pale"})[0]
    assert pale.settings["attribute_indices"] == [1, 0, 0, 0, 0]
    assert np.abs(pale.raw - red.raw).max() > 1e-3
    plain = pipe.generate_variants(prepared, [0], latents=[noise], steps=4, guidance_scale=2.0)[0]
    assert plain.settings["attributes"] == {} and plain.settings["attribute_indices"] == [0] * 5
    # removal stays a prompt: "Normal" is fed no attributes, whatever is asked
    removed = pipe.generate_variants(prepared, [0], prompt="Normal", latents=[noise], steps=4, attributes=asked)[0]
    unasked = pipe.generate_variants(prepared, [0], prompt="Normal", latents=[noise], steps=4)[0]
    assert removed.settings["attribute_indices"] == [0] * 5 and np.array_equal(removed.image, unasked.image)
    with pytest.raises(InputError, match="colour values pale, pink, red, whitish, not 'blue'"):
        pipe.generate_variants(prepared, [0], steps=2, attributes={"colour": "blue"})
    with pytest.raises(InputError, match="not 'texture'"):
        pipe.generate_variants(prepared, [0], steps=2, attributes={"texture": "red"})


def test_attribute_guidance_is_the_guided_pair_at_the_labels_scale_and_the_label_alone_at_zero(exported):
    """u + G·(c₀ − u) + A·(c_a − c₀) on every step (attribute_guidance_until 1): at A = G the one guided pair of the
    asked attributes, at A = 0 the label without them, between and beyond a move along the attributes' own
    direction; recorded when it ran."""
    from engine.pipelines.compact import CompactInpaintPipeline

    _, _, bundle = exported
    pipe = CompactInpaintPipeline.from_bundle(bundle)
    prepared, noise = _prepared(pipe)
    asked = {"colour": "red", "surface": "lobulated"}

    def paint(attributes=None, attribute_guidance=None, **more):
        return pipe.generate_variants(prepared, [0], latents=[noise], steps=4, guidance_scale=2.0,
                                      attributes=attributes, attribute_guidance=attribute_guidance,
                                      attribute_guidance_until=1.0, **more)[0]

    pair = paint(asked)
    assert "attribute_guidance" not in pair.settings
    same = paint(asked, 2.0)
    assert same.settings["attribute_guidance"] == 2.0 and same.settings["attribute_indices"] == pair.settings[
        "attribute_indices"]
    assert np.abs(same.raw - pair.raw).max() < 1e-4
    unasked = paint()
    label_only = paint(asked, 0.0)
    assert np.abs(label_only.raw - unasked.raw).max() < 1e-4
    stronger = paint(asked, 6.0)
    assert np.abs(stronger.raw - pair.raw).max() > 1e-3 and np.abs(stronger.raw - label_only.raw).max() > 1e-3
    # nothing asked (or a removal): nothing to guide, so the pair as before, and nothing recorded
    plain = paint(None, 6.0)
    assert "attribute_guidance" not in plain.settings and np.array_equal(plain.image, unasked.image)
    removed = paint(asked, 6.0, prompt="Normal")
    assert "attribute_guidance" not in removed.settings
    # three predictions a step: a batch of two variants still equals each painted alone
    two = pipe.generate_variants(prepared, [0, 1], latents=[noise, noise[:, :, ::-1].copy()], steps=4,
                                 guidance_scale=2.0, attributes=asked, attribute_guidance=6.0, batch_size=2,
                                 attribute_guidance_until=1.0)
    assert np.abs(two[0].raw - stronger.raw).max() < 1e-4
    with pytest.raises(InputError, match="attribute guidance must be between 0 and 50"):
        paint(asked, 60.0)


def test_attribute_guidance_in_an_interval_runs_three_predictions_on_the_noisiest_steps_then_the_pair(exported,
                                                                                                     monkeypatch):
    """attribute_guidance_until u: [u, c₀, c_a] on the first ceil(u · steps) steps, then the pair [u, c_a] — so at
    A = G (where both rules are u + G·(c_a − u)) it is still the pair exactly, which it is not if the pair after the
    interval took the wrong blocks; at A ≠ G it lies apart from both the pair and the whole-run guidance."""
    from engine.pipelines.compact import ATTRIBUTE_GUIDANCE_UNTIL, CompactInpaintPipeline

    _, _, bundle = exported
    pipe = CompactInpaintPipeline.from_bundle(bundle)
    prepared, noise = _prepared(pipe)
    asked = {"colour": "red", "surface": "lobulated"}
    fed = record_unet_feeds(monkeypatch, pipe, lambda feeds: (  # rows, class labels and the colour column fed
        feeds["sample"].shape[0], feeds["class_labels"].tolist(), feeds["attributes"][:, 0].tolist()))

    def paint(attribute_guidance=None, until=None):
        fed.clear()
        return pipe.generate_variants(prepared, [0], latents=[noise], steps=4, guidance_scale=2.0, attributes=asked,
                                      attribute_guidance=attribute_guidance, attribute_guidance_until=until)[0]

    pair = paint()
    red = pair.settings["attribute_indices"][0]
    assert [rows for rows, _, _ in fed] == [2] * 4
    half = paint(6.0, 0.5)
    assert half.settings["attribute_guidance"] == 6.0 and half.settings["attribute_guidance_until"] == 0.5
    label = fed[0][1][-1]
    assert fed[:2] == [(3, [0, label, label], [0, 0, red])] * 2  # u, c₀, c_a on the two noisiest steps
    assert fed[2:] == [(2, [0, label], [0, red])] * 2  # then the guided pair u, c_a
    whole = paint(6.0, 1.0)
    assert [rows for rows, _, _ in fed] == [3] * 4
    assert np.abs(half.raw - whole.raw).max() > 1e-3 and np.abs(half.raw - pair.raw).max() > 1e-3
    assert np.abs(paint(2.0, 0.5).raw - pair.raw).max() < 1e-4  # A = G: the pair whatever the interval
    assert [rows for rows, _, _ in fed] == [3, 3, 2, 2]
    fed.clear()
    two = pipe.generate_variants(prepared, [0, 1], latents=[noise, noise[:, :, ::-1].copy()], steps=4,
                                 guidance_scale=2.0, attributes=asked, attribute_guidance=6.0,
                                 attribute_guidance_until=0.5, batch_size=2)
    assert [rows for rows, _, _ in fed] == [6, 6, 4, 4]  # two variants: each block holds both
    assert np.abs(two[0].raw - half.raw).max() < 1e-4  # and a variant in a batch is the variant alone
    fed.clear()  # within a guidance interval (the label's, 0.5-1): outside it c_a alone; the attributes on its first half
    pipe.generate_variants(prepared, [0], latents=[noise], steps=4, guidance_scale=2.0, attributes=asked,
                           attribute_guidance=6.0, attribute_guidance_until=0.5, guidance_interval="0.5-1")
    assert fed == [(1, [label], [red])] * 2 + [(3, [0, label, label], [0, 0, red]), (2, [0, label], [0, red])]
    paint(6.0, 0.3)  # a share is rounded up to whole steps: 0.3 of 4 is 2
    assert [rows for rows, _, _ in fed] == [3, 3, 2, 2]
    assert paint(6.0).settings["attribute_guidance_until"] == ATTRIBUTE_GUIDANCE_UNTIL  # the default, recorded
    assert "attribute_guidance_until" not in paint(None, 0.5).settings  # nothing guided apart: nothing recorded
    with pytest.raises(InputError, match=r"attribute_guidance_until is a share of the sampling steps, in \(0, 1\]; got"):
        paint(6.0, 0.0)


def test_a_bundle_without_attributes_runs_as_before_and_refuses_to_be_asked_any():
    from engine.jobs.spec import DEFAULT_MODEL
    from engine.pipelines.compact import CompactInpaintPipeline

    pipe = CompactInpaintPipeline.from_bundle(DEFAULT_MODEL, provider="cpu")
    prepared, noise = _prepared(pipe)
    result = pipe.generate_variants(prepared, [0], latents=[noise], steps=2)[0]
    assert "attributes" not in result.settings and "attribute_indices" not in result.settings
    with pytest.raises(InputError, match="polypforge-compact' was not trained with attributes"):
        pipe.generate_variants(prepared, [0], steps=2, attributes={"colour": "red"})
    with pytest.raises(InputError, match="not trained with attributes: attribute guidance"):
        pipe.generate_variants(prepared, [0], steps=2, attribute_guidance=5.0)


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def sample_corpus(tmp_path_factory) -> Path:
    from engine.samples.frames import generate_sample_set

    folder = tmp_path_factory.mktemp("corpus")
    generate_sample_set(folder, count=12, seed=3, width=160, height=128, with_polyps_every=1)
    return folder


def _task(sample_corpus, cache: Path | None, attributes: bool = True):
    from engine.training.compact_task import CompactInpaintTask, CompactTaskConfig
    from engine.training.corpus import load_corpus

    corpus = load_corpus([sample_corpus], held_out_fraction=0.25)
    config = CompactTaskConfig(resolution=32, batch_size=8, model=_tiny_config(MODEL_ATTRIBUTES if attributes else ()),
                               attributes=attributes)
    return CompactInpaintTask(corpus, config, grid_rows=4, attribute_cache=cache)


def test_training_pairs_carry_their_polyps_measured_attributes(sample_corpus, tmp_path):
    from engine.training.attribute_captions import CACHE_NAME

    cache = tmp_path / CACHE_NAME
    task = _task(sample_corpus, cache)
    batches = [task.make_batch(step, np.random.default_rng(step)) for step in range(30)]
    stored = json.loads(cache.read_text())
    assert stored["captioner"] and len(stored["frames"]) == sum(f.has_polyp for f in task.corpus.train + task.corpus.held_out)
    labels = torch.cat([b["labels"] for b in batches])
    attributes = torch.cat([b["attributes"] for b in batches])
    assert attributes.shape == (len(labels), 5)
    assert not attributes[labels != 1].any()  # Normal pairs and dropped labels: nothing asked
    polyps = attributes[labels == 1]
    assert polyps.any(dim=1).float().mean() > 0.5
    # each attribute dropped on its own about 30 % of the time (size is always measured on these frames)
    dropped = (polyps[:, 2] == 0).float().mean()
    assert 0.15 < dropped < 0.45
    # a second task reads the cache instead of captioning again
    again = _task(sample_corpus, cache)
    assert again.polyp_attributes() == task.polyp_attributes()
    # an attribute-less task's batches hold no attributes (and draw nothing for them: the same pairs as before)
    plain = _task(sample_corpus, None, attributes=False)
    assert "attributes" not in plain.make_batch(0, np.random.default_rng(0))


def test_a_few_training_steps_reach_the_attribute_embeddings_and_the_grid_still_draws(sample_corpus, tmp_path):
    task = _task(sample_corpus, tmp_path / "cache.json")
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(3):
        loss, _ = task.loss(model, task.make_batch(step, np.random.default_rng(step)), torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        grads = {name: model.attribute_embeddings[name].weight.grad for name, _ in MODEL_ATTRIBUTES}
        assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
        optimizer.step()
    assert any(model.attribute_embeddings[name].weight.abs().sum() > 0 for name, _ in MODEL_ATTRIBUTES)
    assert "val_loss" in task.validate(model)
    task.sample_grid(model, 3, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").is_file()


def test_a_warm_start_from_an_attribute_less_model_starts_the_embeddings_at_zero(sample_corpus, tmp_path):
    from engine.models.compact_unet import CompactInpaintUNet, save_compact_model
    from engine.training.compact_task import CompactTaskConfig

    plain = CompactInpaintUNet(_tiny_config(()))
    save_compact_model(plain, CompactTaskConfig(resolution=32, model=plain.config), tmp_path / "plain")
    task = _task(sample_corpus, None)
    task.config.init_from = str(tmp_path / "plain")
    said = []
    from engine.training import compact_task

    state = compact_task.with_new_attribute_weights(dict(plain.state_dict()), task.config.model, log=said.append)
    assert said and "5 new weights start at zero" in said[0] and "attribute_embeddings.colour.weight" in said[0]
    model = task.build_model()
    model.load_state_dict(task.initial_state())  # what the trainer does with a fresh run's warm start
    assert all(not model.attribute_embeddings[n].weight.any() for n, _ in MODEL_ATTRIBUTES)
    assert set(state) == set(model.state_dict())


# ---------------------------------------------------------------------------------------------- the batch job
def _spec(tmp_path, **values):
    from engine.jobs import build_spec

    return build_spec({"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), **values})


def test_asked_words_find_their_attribute_and_a_wrong_one_is_refused_with_the_vocabulary(tmp_path):
    from engine.captioning.conditioning import parse_attributes

    assert parse_attributes("Red, lobulated") == {"colour": "red", "surface": "lobulated"}
    assert parse_attributes("raised,irregular,pale") == {"colour": "pale", "surface": "irregular", "elevation": "raised"}
    assert parse_attributes(" AUTO ") == "auto" and parse_attributes("none") == "none"
    assert _spec(tmp_path, attributes="red,flat").attributes == "red,flat"
    assert _spec(tmp_path, attributes=["red", "flat"]).attributes == "red,flat"  # a job file's list
    for words, message in (("red,blue", "unknown word 'blue'; the words are colour: pale, pink, red, whitish; "
                                        "surface: smooth, lobulated, irregular; elevation: flat, raised"),
                           ("red,pale", "'red' and 'pale' are both a colour"),
                           ("large", "'large' is a size, which comes from the mask"),
                           (",", "is empty")):
        with pytest.raises(InputError, match=message):
            _spec(tmp_path, attributes=words)
    with pytest.raises(InputError, match="apply to mode add only"):
        _spec(tmp_path, attributes="red", mode="remove", mask_source="box")
    # the default shapes nothing: a job folder written before attributes existed still resumes
    assert "attributes" not in _spec(tmp_path).settings_that_shape_output()
    assert _spec(tmp_path, attributes="none").settings_that_shape_output()["attributes"] == "none"


def test_auto_draws_follow_the_distribution_and_each_variant_keeps_its_draw():
    from engine.captioning.conditioning import (
        PRIOR_SOURCE,
        AttributeDistribution,
        AttributePlan,
        kvasir_seg_attribute_prior,
    )

    counts = {"colour": {"pale": 10, "pink": 60, "red": 25, "whitish": 5},
              "surface": {"smooth": 70, "lobulated": 20, "irregular": 10}, "elevation": {"flat": 0, "raised": 100}}
    plan = AttributePlan(PRIOR_SOURCE, distribution=AttributeDistribution(counts, PRIOR_SOURCE, 100))
    draws = [plan.chosen(seed) for seed in range(4000)]
    assert plan.chosen(17) == draws[17]  # seeded by the variant's seed
    for name, table in counts.items():
        total = sum(table.values())
        # Pearson's chi-square over the values drawn at all; 16.27 is the 0.999 quantile at 3 degrees of freedom
        chi2 = sum((sum(d[name] == v for d in draws) - 4000 * c / total) ** 2 / (4000 * c / total)
                   for v, c in table.items() if c)
        assert chi2 < 16.27, (name, chi2)
        assert all(d[name] != v for d in draws for v, c in table.items() if not c)
    prior = kvasir_seg_attribute_prior()
    assert prior.source == "kvasir-prior" and prior.polyps == 1063
    assert sum(prior.counts["colour"].values()) == 1063


@pytest.fixture(scope="module")
def frames_with_masks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    generate = __import__("engine.samples", fromlist=["generate_sample_set"]).generate_sample_set
    generate(root, count=3, seed=7, width=160, height=128, with_polyps_every=1)
    return root


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines() if line.strip()]


def _batch(*args) -> int:
    import main

    return main.main(["--batch", "--quiet", "--steps", "2", *map(str, args)])


def test_asked_attributes_reach_the_model_the_manifest_and_coco(exported, frames_with_masks, tmp_path):
    from test_batch_job import check_dataset

    _, _, bundle = exported
    output = tmp_path / "asked"
    assert _batch("--input", frames_with_masks, "--output", output, "--model", bundle, "--attributes",
                  "red,lobulated", "--variants", 2) == 0
    ok = [r for r in _records(output) if r["status"] == "ok"]
    assert len(ok) == 6
    for record in ok:
        asked = record["attributes_asked"]
        assert asked["colour"] == "red" and asked["surface"] == "lobulated" and "elevation" not in asked
        assert asked["size"] in ("diminutive", "small", "large") and asked["outline"] in ("round", "oval", "irregular")
        assert record["attributes_derived"] == ["size", "outline"] and record["attributes_source"] == "user"
    coco = check_dataset(output)["coco"]  # pycocotools still reads it
    generated = [a for a in coco.loadAnns(coco.getAnnIds()) if a["origin"] == "generated"]
    assert generated and all(a["attributes"]["colour"] == "red" for a in generated)
    by_file = {r["image"]: r for r in ok}
    for annotation in generated:
        image = coco.loadImgs(annotation["image_id"])[0]
        assert annotation["attributes"] == by_file[image["file_name"]]["attributes_asked"]

    # auto on three annotated polyps: too few for the input's own distribution, so the Kvasir-SEG prior, drawn per
    # variant from its seed (the same again in another folder)
    drawn = []
    for name in ("auto-a", "auto-b"):
        assert _batch("--input", frames_with_masks, "--output", tmp_path / name, "--model", bundle,
                      "--variants", 2) == 0
        records = [r for r in _records(tmp_path / name) if r["status"] == "ok"]
        assert all(r["attributes_source"] == "kvasir-prior" for r in records)
        assert all({"colour", "surface", "elevation", "size", "outline"} <= set(r["attributes_asked"]) for r in records)
        drawn.append([r["attributes_asked"] for r in records])
    assert drawn[0] == drawn[1]
    none = tmp_path / "none"
    assert _batch("--input", frames_with_masks, "--output", none, "--model", bundle, "--attributes", "none") == 0
    assert all(r["attributes_asked"] == {} and r["attributes_source"] == "none" for r in _records(none))


def test_attribute_guidance_reaches_the_manifest_and_is_refused_where_it_guides_nothing(exported, frames_with_masks,
                                                                                       tmp_path, capsys):
    from engine.pipelines.compact import ATTRIBUTE_GUIDANCE_UNTIL

    _, _, bundle = exported
    output = tmp_path / "guided"
    assert _batch("--input", frames_with_masks, "--output", output, "--model", bundle, "--attributes", "red",
                  "--attribute-guidance", 5) == 0
    ok = [r for r in _records(output) if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["attribute_guidance"] == 5.0 and r["guidance"] == 2.0 for r in ok)
    job = json.loads((output / "job.json").read_text())
    assert job["settings"]["attribute_guidance"] == 5.0
    assert all(r["attribute_guidance_until"] == ATTRIBUTE_GUIDANCE_UNTIL for r in ok)  # the default, recorded
    interval = tmp_path / "interval"
    assert _batch("--input", frames_with_masks, "--output", interval, "--model", bundle, "--attributes", "red",
                  "--attribute-guidance", 5, "--attribute-guidance-until", 0.4) == 0
    assert {r.get("attribute_guidance_until") for r in _records(interval) if r["status"] == "ok"} == {0.4}
    assert json.loads((interval / "job.json").read_text())["settings"]["attribute_guidance_until"] == 0.4
    assert _batch("--input", frames_with_masks, "--output", tmp_path / "alone", "--model", bundle, "--attributes",
                  "red", "--attribute-guidance-until", 0.4) == 2
    assert "attribute_guidance_until says on which steps attribute guidance runs" in capsys.readouterr().err
    assert _batch("--input", frames_with_masks, "--output", tmp_path / "beyond", "--model", bundle, "--attributes",
                  "red", "--attribute-guidance", 5, "--attribute-guidance-until", 1.5) == 2
    assert "attribute_guidance_until is a share of the sampling steps, in (0, 1]; got 1.5" in capsys.readouterr().err
    plain = tmp_path / "plain"  # without it, nothing recorded (and a job written before it existed resumes)
    assert _batch("--input", frames_with_masks, "--output", plain, "--model", bundle, "--attributes", "red") == 0
    assert not any("attribute_guidance" in r for r in _records(plain))
    assert _batch("--input", frames_with_masks, "--output", tmp_path / "default", "--attribute-guidance", 5) == 2
    assert "nothing for attribute guidance (--attribute-guidance) to guide" in capsys.readouterr().err
    none = tmp_path / "none"  # nothing asked: nothing to guide, painted and recorded as without it
    assert _batch("--input", frames_with_masks, "--output", none, "--model", bundle, "--attributes", "none",
                  "--attribute-guidance", 5) == 0
    assert not any("attribute_guidance" in r for r in _records(none))
    assert _batch("--input", frames_with_masks, "--output", tmp_path / "remove", "--model", bundle, "--mode",
                  "remove", "--mask-source", "user", "--attribute-guidance", 5) == 2
    assert "attribute_guidance applies to mode add only" in capsys.readouterr().err


def test_auto_takes_the_inputs_own_distribution_from_twenty_polyps(exported, tmp_path):
    from engine.bundle import read_bundle
    from engine.dataset.discovery import discover
    from engine.jobs.attributes import job_attributes
    from engine.samples import generate_sample_set

    _, _, bundle_path = exported
    bundle = read_bundle(bundle_path)
    generate_sample_set(tmp_path / "in", count=20, seed=2, width=160, height=128, with_polyps_every=1)
    frames = discover(tmp_path / "in").frames
    plan = job_attributes(frames, _spec(tmp_path), bundle)
    assert plan.source == "input" and plan.distribution.polyps >= 20
    assert sum(plan.distribution.counts["colour"].values()) == plan.distribution.polyps
    few = job_attributes(frames[:5], _spec(tmp_path), bundle)
    assert few.source == "kvasir-prior"
    assert job_attributes(frames, _spec(tmp_path, mode="remove", mask_source="box"), bundle) is None


def test_an_attribute_less_bundle_is_asked_nothing_and_refuses_asked_words(frames_with_masks, tmp_path, capsys):
    output = tmp_path / "plain"
    assert _batch("--input", frames_with_masks, "--output", output, "--steps", "1") == 0  # auto, the default model
    records = _records(output)
    assert records and not any(key.startswith("attributes") for r in records for key in r)
    coco = json.loads((output / "annotations" / "instances.json").read_text())
    assert not any("attributes" in a for a in coco["annotations"])
    assert _batch("--input", frames_with_masks, "--output", tmp_path / "asked", "--attributes", "red") == 2
    assert "'polypforge-compact' was not trained with attributes" in capsys.readouterr().err


def test_train_with_attributes_from_an_attribute_less_run_exports_an_attribute_bundle(sample_corpus, tmp_path):
    from cli_helpers import run_main
    from test_training_compact import TINY_ARGS

    common = ["train", "--preset", "compact", "--input", str(sample_corpus), *TINY_ARGS, "--checkpoint-every", "2"]
    plain = tmp_path / "plain"
    assert run_main([*common, "--steps", "2", "--sample-every", "0", "--validate-every", "0", "--no-export",
                     "--run", str(plain)]).returncode == 0
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    done = run_main([*common, "--attributes", "--steps", "2", "--sample-every", "2", "--validate-every", "2",
                     "--init-from", str(plain), "--run", str(run), "--to", str(bundle)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 new weights start at zero" in done.stdout
    cached = json.loads((run / "attribute_captions.json").read_text())
    assert cached["frames"] and all(len(e["polyps"]) >= 1 for e in cached["frames"].values())
    assert (run / "samples" / "step-00000002.png").is_file()
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["task"]["attributes"] is True and [a[0] for a in config["model"]["attributes"]] == \
        [name for name, _ in MODEL_ATTRIBUTES]
    assert json.loads((bundle / "bundle.json").read_text())["attributes"]["names"][0] == "colour"
    refused = run_main(["train", "--method", "detail", "--preset", "compact", "--attributes", "--input",
                        str(sample_corpus), "--run", str(tmp_path / "detail"), "--init-from", str(run / "model")])
    assert refused.returncode == 2 and "--attributes conditions the compact inpainting model" in refused.stderr
