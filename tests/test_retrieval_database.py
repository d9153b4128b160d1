"""The on-disk retrieval database: build / add / info / propose round trip through the commands, bad frames
skipped, atomic builds, adds that survive crashes, integrity checks, feature-bundle identity."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

import main as app
from engine.dataset.image_reader import read_mask
from engine.errors import InputError
from engine.retrieval.build import EntrySource, add_to_database, build_database
from engine.retrieval.database import (
    GLOBALS,
    INDEX,
    LOCALS,
    DatabaseError,
    DatabaseWriter,
    RetrievalDatabase,
    create_empty,
)
from engine.retrieval.features import FeatureExtractor, MeanColourExtractor
from engine.retrieval.proposer import RetrievalProposer
from engine.samples import generate_frame, generate_sample_set


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """polyps/ (Kvasir layout, 6 frames with masks), more/ (3 other polyp frames), normals/ (3 normal frames
    with curator masks), in a module-wide folder."""
    root = tmp_path_factory.mktemp("retrieval_inputs")
    generate_sample_set(root / "polyps", count=6, seed=0, with_polyps_every=1)
    generate_sample_set(root / "more", count=3, seed=1, with_polyps_every=1)
    for i in range(3):
        frame, _ = generate_frame(900 + i, 320, 256, polyps=0)
        mask = np.zeros((256, 320), np.uint8)
        mask[60 + 20 * i:120 + 20 * i, 100:170] = 255
        _save(root / "normals" / "images" / f"normal_{i}.png", frame)
        _save(root / "normals" / "masks" / f"normal_{i}.png", mask)
    return root


def _run(argv, capsys):
    code = app.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_build_info_add_propose_round_trip(folders, tmp_path, capsys):
    db_path = tmp_path / "db"
    code, out, err = _run(["db", "build", "--polyps", folders / "polyps", "--normals", folders / "normals",
                           "--to", db_path], capsys)
    assert code == 0, err
    assert "RANDOM weights" in err and "shortcut" in err
    db = RetrievalDatabase.open(db_path)
    assert db.count == 9
    assert db.locals.shape == (9, 256, 32) and db.locals.dtype == np.float16
    entries = list(db.entries())
    assert [e["id"] for e in entries] == list(range(9))
    assert sorted(e["how"] for e in entries) == ["polyp-frame"] * 6 + ["supplied"] * 3
    for entry in entries:
        source = entry["source"]
        assert entry["sha256"] == hashlib.sha256(open(source, "rb").read()).hexdigest()
        mask_source = source.replace("/images/", "/masks/")
        assert np.array_equal(db.mask(entry["id"]), read_mask(mask_source))
        assert db.thumbnail(entry["id"]).shape[1] == 256
    norms = np.linalg.norm(db.globals, axis=1)
    np.testing.assert_allclose(norms, 1, atol=1e-5)
    manifest = json.loads((db_path / "manifest.json").read_text())
    assert manifest["features"]["name"] == "demo-dinov2" and manifest["count"] == 9
    assert manifest["features"]["bundle_id"] == FeatureExtractor.from_bundle("demo-dinov2").bundle_id

    code, out, _ = _run(["db", "info", db_path], capsys)
    assert code == 0 and "integrity: ok" in out and "entries    9" in out and "demo-dinov2" in out
    code, out, _ = _run(["db", "info", db_path, "--json"], capsys)
    assert code == 0 and json.loads(out)["count"] == 9

    code, out, err = _run(["db", "add", db_path, "--polyps", folders / "more"], capsys)
    assert code == 0, err
    assert RetrievalDatabase.open(db_path).count == 12
    code, out, err = _run(["db", "add", db_path, "--polyps", folders / "polyps"], capsys)  # all already there
    assert code == 0 and out.count("already in the database") == 6
    assert RetrievalDatabase.open(db_path).count == 12

    frame = folders / "normals" / "images" / "normal_1.png"
    code, out, err = _run(["propose", frame, "--db", db_path, "--top-k", "4", "--out", tmp_path / "m.png",
                           "--explain", tmp_path / "e.png", "--json", tmp_path / "p.json"], capsys)
    assert code == 0, out + err
    assert "#1  box x=" in out
    mask = np.asarray(Image.open(tmp_path / "m.png"))
    assert mask.shape == (256, 320) and set(np.unique(mask)) <= {0, 255} and mask.any()
    explain = np.asarray(Image.open(tmp_path / "e.png"))
    assert explain.ndim == 3 and explain.shape[0] > 400
    payload = json.loads((tmp_path / "p.json").read_text())
    assert payload["db_count"] == 12 and payload["proposals"][0]["box"]
    assert len(payload["proposals"]) + len(payload["refused"]) + sum(len(p["merged"]) for p in payload["proposals"]) == 4

    code, _, err = _run(["db", "build", "--polyps", folders / "polyps", "--to", db_path], capsys)
    assert code == 2 and "already exists" in err
    code, _, err = _run(["db", "build", "--to", tmp_path / "x"], capsys)
    assert code == 2 and "--polyps DIR and/or --normals DIR" in err
    code, _, err = _run(["db", "info", tmp_path / "nothing"], capsys)
    assert code == 2 and "no such database folder" in err


def test_bad_frames_are_reported_and_skipped(folders, tmp_path, capsys):
    source = tmp_path / "mixed"
    shutil.copytree(folders / "polyps", source)
    (source / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (source / "masks" / "broken.jpg").write_bytes((source / "masks" / "sample_000.png").read_bytes())
    frame, _ = generate_frame(77, 320, 256, polyps=0)
    _save(source / "images" / "no_mask.png", frame)
    _save(source / "images" / "wrong_size.png", frame)
    _save(source / "masks" / "wrong_size.png", np.full((100, 100), 255, np.uint8))
    _save(source / "images" / "empty_mask.png", frame)
    _save(source / "masks" / "empty_mask.png", np.zeros((256, 320), np.uint8))
    code, out, err = _run(["db", "build", "--polyps", source, "--to", tmp_path / "db"], capsys)
    assert code == 0, err
    assert RetrievalDatabase.open(tmp_path / "db").count == 6
    assert "skipped 4 frame(s)" in out
    for name, reason in (("broken.jpg", "not an image file"), ("no_mask.png", "no mask paired"),
                         ("wrong_size.png", "the mask is 100×100 but the frame is 320×256"),
                         ("empty_mask.png", "the mask is empty")):
        assert any(name in line and reason in line for line in out.splitlines()), (name, out)


class _FailingExtractor:
    """The stand-in extractor, interrupted (as by Ctrl+C or a kill) at its n-th frame."""

    def __init__(self, fail_at: int):
        self.inner = MeanColourExtractor()
        self.calls = 0
        self.fail_at = fail_at

    def identity(self):
        return self.inner.identity()

    def extract(self, frame):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.inner.extract(frame)


def _sources(folder):
    return [EntrySource(p, folder / "masks" / p.name, "polyp") for p in sorted((folder / "images").iterdir())]


def test_an_interrupted_build_leaves_nothing_under_the_target_name(folders, tmp_path):
    target = tmp_path / "db"
    with pytest.raises(KeyboardInterrupt):
        build_database(target, _sources(folders / "polyps"), _FailingExtractor(4), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []  # neither the database nor its temporary folder
    # over an existing database (--overwrite): the old one stays as it was
    build_database(target, _sources(folders / "more"), MeanColourExtractor(), log=lambda _: None)
    before = RetrievalDatabase.open(target).db_id
    with pytest.raises(KeyboardInterrupt):
        build_database(target, _sources(folders / "polyps"), _FailingExtractor(2), overwrite=True, log=lambda _: None)
    assert RetrievalDatabase.open(target).db_id == before and RetrievalDatabase.open(target).count == 3
    assert [p.name for p in tmp_path.iterdir()] == ["db"]


def test_add_after_a_crash_ignores_then_truncates_uncommitted_bytes(folders, tmp_path):
    extractor = MeanColourExtractor()
    db_path = tmp_path / "db"
    build_database(db_path, _sources(folders / "polyps")[:3], extractor, log=lambda _: None)
    committed = {p.name: p.read_bytes() for p in db_path.iterdir() if p.is_file() and not p.name.startswith(".")}
    # a crashed add: entries appended, never committed, plus garbage at the end of the locals file
    writer = DatabaseWriter(db_path, extractor.identity())
    for source in _sources(folders / "more")[:2]:
        frame = np.asarray(Image.open(source.frame_path).convert("RGB"))
        features = extractor.extract(frame)
        writer.add(features.local, features.global_, read_mask(source.mask_path), frame, str(source.frame_path),
                   f"sha{source.frame_path.name}", "polyp-frame")
    writer._locals.flush()
    writer._entries.flush()
    writer.close()  # the process dies here
    with open(db_path / LOCALS, "ab") as handle:
        handle.write(b"\x00" * 1001)

    db = RetrievalDatabase.open(db_path)
    assert db.count == 3 and db.locals.shape[0] == 3
    problems, notes = db.verify()
    assert problems == [] and any("beyond the committed" in n for n in notes)
    _, ids = db.search(extractor.extract(np.zeros((64, 64, 3), np.uint8)).global_, 10)
    assert sorted(ids.tolist()) == [0, 1, 2]
    assert (db_path / "masks" / "0000003.png").exists()  # the uncommitted entry's files are still there

    report = add_to_database(db_path, _sources(folders / "more")[2:], extractor, log=lambda _: None)
    assert report.count == 4 and report.added == 1
    assert report.truncated[LOCALS] == 2 * 256 * 3 * 2 + 1001 and report.truncated["entries.jsonl"] > 0
    assert report.truncated["files"] == 2 * 2  # masks and thumbnails of entries 3 and 4
    db = RetrievalDatabase.open(db_path)
    assert (db_path / LOCALS).stat().st_size == 4 * 256 * 3 * 2
    assert db.verify(check_bundle=False) == ([], [])
    assert [e["id"] for e in db.entries()] == [0, 1, 2, 3]
    assert db.entry(3)["source"].endswith("sample_002.png") and not (db_path / "masks" / "0000004.png").exists()
    # the committed bytes were never touched
    assert (db_path / LOCALS).read_bytes()[: len(committed[LOCALS])] == committed[LOCALS]


def test_a_crash_before_the_manifest_is_replaced_changes_nothing(folders, tmp_path, monkeypatch):
    import engine.retrieval.database.writer as writer_module  # where commit() replaces the manifest

    extractor = MeanColourExtractor()
    db_path = tmp_path / "db"
    build_database(db_path, _sources(folders / "polyps")[:3], extractor, log=lambda _: None)
    real_write = writer_module.atomic_write_bytes

    def dies_at_the_manifest(path, data):
        if str(path).endswith("manifest.json"):
            raise KeyboardInterrupt
        return real_write(path, data)

    monkeypatch.setattr(writer_module, "atomic_write_bytes", dies_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        add_to_database(db_path, _sources(folders / "more"), extractor, log=lambda _: None)
    monkeypatch.setattr(writer_module, "atomic_write_bytes", real_write)

    db = RetrievalDatabase.open(db_path)
    assert db.count == 3
    assert np.load(db_path / GLOBALS).shape == (6, 3)  # the new globals and index were already in place…
    _, ids = db.search(extractor.extract(np.zeros((64, 64, 3), np.uint8)).global_, 10)
    assert sorted(ids.tolist()) == [0, 1, 2]  # …and are not used beyond the committed count
    assert any("interrupted add" in note for note in db.notes)
    problems, notes = db.verify()
    assert problems == [] and any(INDEX in n for n in notes)
    report = add_to_database(db_path, _sources(folders / "more"), extractor, log=lambda _: None)
    assert report.count == 6 and RetrievalDatabase.open(db_path).verify(check_bundle=False) == ([], [])


def test_integrity_problems_are_found(folders, tmp_path, capsys):
    extractor = MeanColourExtractor()
    db_path = tmp_path / "db"
    build_database(db_path, _sources(folders / "polyps")[:3], extractor, log=lambda _: None)
    (db_path / "masks" / "0000001.png").unlink()
    code, out, _ = _run(["db", "info", db_path], capsys)
    assert code == 1 and "PROBLEM: masks/0000001.png: missing" in out
    # index vectors that are not globals.npy's
    import faiss

    index = faiss.IndexFlatL2(3)
    index.add(np.eye(3, dtype=np.float32))
    faiss.write_index(index, str(db_path / INDEX))
    problems, _ = RetrievalDatabase.open(db_path).verify()
    assert any("differ from globals.npy" in p for p in problems)
    # a locals file cut short cannot be opened
    with open(db_path / LOCALS, "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(DatabaseError, match="cut short"):
        RetrievalDatabase.open(db_path)
    code, _, err = _run(["db", "info", db_path], capsys)
    assert code == 2 and "cut short" in err
    # one writer at a time
    other = tmp_path / "other"
    build_database(other, _sources(folders / "more"), extractor, log=lambda _: None)
    with DatabaseWriter(other, extractor.identity()):
        with pytest.raises(DatabaseError, match="another process"):
            DatabaseWriter(other, extractor.identity())


def test_a_database_refuses_other_features(folders, tmp_path, capsys):
    from engine.export.dinov2_export import build_random_dinov2, export_dinov2_bundle

    db_path = tmp_path / "db"
    assert _run(["db", "build", "--polyps", folders / "more", "--to", db_path], capsys)[0] == 0
    other = tmp_path / "other-dinov2"
    export_dinov2_bundle(build_random_dinov2(tmp_path / "src", seed=9), other, log=lambda _: None)
    frame = folders / "polyps" / "images" / "sample_001.png"
    code, _, err = _run(["propose", frame, "--db", db_path, "--features", other], capsys)
    assert code == 2 and "not comparable" in err and "--features demo-dinov2" in err
    code, _, err = _run(["db", "add", db_path, "--polyps", folders / "polyps", "--features", other], capsys)
    assert code == 2 and "not comparable" in err
    with pytest.raises(DatabaseError, match="not comparable"):
        RetrievalProposer.open(db_path, other)
    proposer = RetrievalProposer.open(db_path)  # the bundle the database records, by name
    described = proposer.describe()
    assert described["db_id"] == hashlib.sha256((db_path / "manifest.json").read_bytes()).hexdigest()
    assert described["feature_bundle"] == "demo-dinov2" and described["db_count"] == 3
    proposals = proposer.propose(np.asarray(Image.open(frame).convert("RGB")), top_k=3)
    assert all(p.candidate.entry_id in (0, 1, 2) for p in proposals)
    # a database of stand-in features names no bundle to open
    stand_in = tmp_path / "stand-in"
    create_empty(stand_in, MeanColourExtractor().identity())
    with pytest.raises(InputError, match="not a feature bundle"):
        RetrievalProposer.open(stand_in)


def test_remove_polyps_stores_frames_made_polyp_free_by_the_engine(folders, tmp_path, capsys):
    source = tmp_path / "two"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    for name in ("sample_000.png", "sample_001.png"):
        shutil.copy(folders / "polyps" / "images" / name, source / "images" / name)
        shutil.copy(folders / "polyps" / "masks" / name, source / "masks" / name)
    code, _, err = _run(["db", "build", "--polyps", source, "--remove-polyps", "--steps", "2", "--to",
                           tmp_path / "db"], capsys)
    assert code == 0, err
    from engine.bundle.format import read_bundle

    from engine.jobs.spec import DEFAULT_MODEL

    inpaint_id = read_bundle(DEFAULT_MODEL).bundle_id  # --remove-polyps without --model: the default model
    db = RetrievalDatabase.open(tmp_path / "db")
    assert [e["how"] for e in db.entries()] == [f"removed-by-{inpaint_id}"] * 2
    entry = db.entry(0)
    original = np.asarray(Image.open(entry["source"]).convert("RGB").resize((256, 205)), np.float32)
    stored = db.thumbnail(0).astype(np.float32)
    mask = np.asarray(Image.open(tmp_path / "db" / entry["mask"]).resize((256, 205))) > 127
    # the polyp was painted over; far from it the frame is unchanged
    assert np.abs(stored - original)[mask].mean() > 3 * np.abs(stored - original)[~mask].mean()
