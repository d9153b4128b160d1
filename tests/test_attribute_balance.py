"""Rare attributes drawn more often in training (``main.py train --rare-attributes FLOOR``,
engine.training.attribute_balance): the weights, the task's weighted draw, the option's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.captioning.conditioning import MODEL_ATTRIBUTES
from engine.training.attribute_balance import rare_value_weights, shares_line, value_shares


def test_a_rare_value_is_lifted_towards_the_floor_and_common_ones_keep_their_weight():
    polyps = [{"colour": "pink", "surface": "smooth"}] * 90 + [{"colour": "whitish", "surface": "smooth"}] * 10
    base = np.ones(100)
    weights = rare_value_weights(polyps, base, floor=0.3)
    assert np.allclose(weights[:90], 1.0) and np.allclose(weights[90:], 3.0)  # 0.3 / 0.1
    after = value_shares(polyps, weights)
    assert after["colour"]["whitish"] == pytest.approx(30 / 120)
    assert after["surface"] == {"smooth": 1.0}  # one value: nothing to balance
    line = shares_line(value_shares(polyps, base), after)
    assert "whitish 10→25 %" in line and "pink 90→75 %" in line


def test_the_boost_is_capped_taken_from_the_rarest_value_and_unmeasured_polyps_keep_their_base():
    polyps = ([{"colour": "pink", "elevation": "raised"}] * 98 + [{"colour": "pink", "elevation": "flat"}]
              + [{"colour": None}])
    base = np.full(100, 0.5)
    weights = rare_value_weights(polyps, base, floor=0.5, cap=8.0)
    assert weights[98] == pytest.approx(0.5 * 8.0)  # flat: 1 of 99 measured, 0.5 / 0.0101 = 49.5, capped at 8
    assert weights[99] == pytest.approx(0.5)  # nothing measured
    assert np.allclose(weights[:98], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        rare_value_weights(polyps, base, floor=1.5)
    with pytest.raises(ValueError, match="base weights"):
        rare_value_weights(polyps, base[:3], floor=0.2)


@pytest.fixture(scope="module")
def sample_corpus(tmp_path_factory) -> Path:
    from engine.samples.frames import generate_sample_set

    folder = tmp_path_factory.mktemp("corpus")
    generate_sample_set(folder, count=12, seed=3, width=160, height=128, with_polyps_every=1)
    return folder


def _task(sample_corpus, cache: Path, floor: float | None):
    from engine.models.compact_unet import CompactConfig
    from engine.training.compact_task import CompactInpaintTask, CompactTaskConfig
    from engine.training.corpus import load_corpus

    corpus = load_corpus([sample_corpus], held_out_fraction=0.25)
    model = CompactConfig(widths=(8, 16), blocks=1, stem=2, attention_levels=(1,), attributes=MODEL_ATTRIBUTES)
    config = CompactTaskConfig(resolution=32, batch_size=200, model=model, attributes=True, polyp_fraction=1.0,
                               rare_attribute_floor=floor)
    return CompactInpaintTask(corpus, config, grid_rows=4, attribute_cache=cache)


def _colour_shares(task, weighted: bool) -> dict[int, float]:
    rng = np.random.default_rng(7)
    rows = np.concatenate([task._raw_batch(rng, task.polyp_frames, task.normal_frames, task.corpus.train,
                                           drop_labels=False, weighted=weighted)["attributes"] for _ in range(3)])
    colours = rows[:, 0]
    measured = colours[colours > 0]
    return {int(v): float((measured == v).mean()) for v in np.unique(measured)}


def test_the_training_task_draws_the_rare_colour_more_often(sample_corpus, tmp_path, capsys):
    task = _task(sample_corpus, tmp_path / "cache.json", floor=0.4)
    pairs, cumulative = task.polyp_draw()
    said = capsys.readouterr().out
    assert "rare attributes drawn more often (floor 0.40)" in said
    assert len(pairs) == sum(len(f.boxes) for f in task.polyp_frames) and cumulative[-1] == pytest.approx(1.0)
    as_found, weighted = _colour_shares(task, weighted=False), _colour_shares(task, weighted=True)
    rarest = min(as_found, key=as_found.get)
    assert weighted[rarest] > as_found[rarest] + 0.08  # e.g. 0.14 → 0.27 on this fixture
    # the make_raw_batch the trainer calls is the weighted one; the config says it (a resume must repeat it)
    assert task.make_raw_batch(0, np.random.default_rng(0))["attributes"].shape == (200, 5)
    assert task.config.to_json()["rare_attribute_floor"] == 0.4
    plain = _task(sample_corpus, tmp_path / "cache.json", floor=None)
    assert "rare_attribute_floor" not in plain.config.to_json()  # earlier runs' settings read as before
    with pytest.raises(ValueError, match="needs attributes on"):
        from engine.training.compact_task import CompactInpaintTask

        CompactInpaintTask(plain.corpus, type(plain.config)(attributes=False, rare_attribute_floor=0.2))


def test_the_option_needs_attributes_and_a_share(sample_corpus, tmp_path, capsys):
    import main

    code = main.main(["train", "--preset", "compact", "--input", str(sample_corpus), "--run", str(tmp_path / "run"),
                      "--rare-attributes", "0.2", "--steps", "1"])
    assert code != 0 and "--rare-attributes draws polyps by their measured attributes: it needs --attributes" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        main.main(["train", "--preset", "compact", "--input", str(sample_corpus), "--run", str(tmp_path / "run"),
                   "--attributes", "--rare-attributes", "2", "--steps", "1"])
    assert "expected a share between 0 and 1" in capsys.readouterr().err


def test_the_embeddings_learn_at_their_own_rate_and_a_resumed_run_ends_where_one_alone_does(sample_corpus, tmp_path):
    """--attribute-lr-scale puts the attribute embeddings in an optimiser group of their own (the rate times the
    factor, no weight decay); the checkpoint keeps both groups, so a run stopped half way and resumed ends at the
    very weights of one run straight through; and the embeddings move further than at the plain rate."""
    from safetensors.torch import load_file

    from engine.training.compact_task import CompactInpaintTask
    from cli_helpers import run_main

    task = _task(sample_corpus, tmp_path / "cache.json", floor=None)
    task.config.attribute_lr_scale = 30.0
    groups = task.parameter_groups(task.build_model())
    assert [g.get("lr_scale", 1.0) for g in groups] == [1.0, 30.0] and groups[1]["weight_decay"] == 0.0
    assert len(groups[1]["params"]) == len(MODEL_ATTRIBUTES)
    assert task.config.to_json()["attribute_lr_scale"] == 30.0
    with pytest.raises(ValueError, match="needs attributes on"):
        CompactInpaintTask(task.corpus, type(task.config)(attributes=False, attribute_lr_scale=30.0))

    common = ["train", "--preset", "compact", "--input", str(sample_corpus), "--resolution", "32", "--widths", "8,16",
              "--blocks", "1", "--stem", "2", "--attention-levels", "1", "--batch-size", "4", "--threads", "1",
              "--quiet", "--held-out-fraction", "0.25", "--attributes", "--rare-attributes", "0.3",
              "--checkpoint-every", "3", "--sample-every", "0", "--validate-every", "0", "--no-export", "--lr", "1e-3"]
    scaled = [*common, "--attribute-lr-scale", "30"]
    for args in ([*scaled, "--steps", "6", "--run", str(tmp_path / "alone")],
                 [*scaled, "--steps", "3", "--run", str(tmp_path / "half")],
                 [*scaled, "--steps", "6", "--run", str(tmp_path / "half")],
                 [*common, "--steps", "6", "--run", str(tmp_path / "plain")]):
        result = run_main(args)
        assert result.returncode == 0, result.stderr[-2000:]

    def model(run):
        tensors = load_file(str(tmp_path / run / "checkpoints" / "step-00000006" / "tensors.safetensors"))
        return {k: v for k, v in tensors.items() if k.startswith("model.")}

    alone, half, plain = model("alone"), model("half"), model("plain")
    assert all(torch.equal(alone[k], half[k]) for k in alone)
    key = "model.attribute_embeddings.colour.weight"
    assert alone[key].abs().max() > 5 * plain[key].abs().max() > 0
