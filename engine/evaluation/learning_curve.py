"""``main.py evaluate``: a learning curve — with f of my real frames, how much does each synthetic arm add?

At each fraction f of the real training frames (``fractions``, default 0.1 and 0.25) a fixed, hash-chosen subset
(engine.evaluation.curve_arms: stable and nested; ``subset_draw`` k > 0: another, independent subset of the same size)
is split into training frames and a real validation split.
Arms, each trained under the same budget with the same seeds and the same validation frames:

- ``real``: the subset's training frames alone;
- one arm per batch job file (``arms``: name → job file; e.g. add, copy-paste, transplant): the job is run per
  fraction on the subset's training frames only, and ``synthetic_ratio`` × (real training frames) of its variants
  join the real ones in the pool; or ``synthetic``: folders made beforehand, one per fraction, refused when a
  variant's source frame is not in that fraction's subset;
- a mix (``mixes``: name → arms): the pools of two or more of those arms, drawn in equal shares (copy-paste and
  judge-kept synthetic together, say); any arm may have its own ratio (``arm_ratios``: e.g. copy-paste at 2 per
  real frame, the equal-count baseline of a generated arm at 2).

The downstream segmenter is the judge's recipe (engine.evaluation.judge_task: the compact U-Net at 128², batches
of 8, AdamW with a cosine schedule over ``max_steps``) with the budget set by convergence: validation Dice every
``validate_every`` steps, stop after ``patience`` validations without a better one, at most ``max_steps``; the
best validation's weights are scored. Every run is scored on every test set (Dice, IoU, AP per frame at its own
resolution) and on polyp-free frames (``normals``: the share of frames where it sees a polyp-sized blob).
Its settings, runs and the plan printed first: engine.evaluation.curve_plan; statistics and the report:
engine.evaluation.curve_report.

Layout of the output folder (each run its own file, so an arm, a fraction or a seed can be added later; a run is
reused when its settings match, refused when they do not, resumed from its checkpoint when it was killed)::

    evaluation.json                        what was asked last
    subsets/<fraction>/split.tsv           the split file the arms' batch jobs read (subset train, the rest test)
    synthetic/<fraction>/<arm>/            a generated arm's batch-job output
    runs/<fraction>/<arm>-seed<k>/         the trainer's run folder (log.jsonl, best.safetensors; checkpoints until done)
    results/<fraction>/<arm>-seed<k>.json  that run's settings, budget and scores, written atomically when done
    report.json, report.html, learning_curve.png   rebuilt after every run

``run_learning_curve(settings, on_progress, cancel)`` is the one entry (the command and the app): progress as
``CurveProgress`` events, ``cancel()`` polled at every step (the run resumes from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


from engine.errors import InputError
from engine.evaluation import segdata
from engine.evaluation.curve_arms import (
    REAL,
    Fraction,
    check_sources,
    draw_mixed,
    fraction_label,
    generate_arm,
    make_fraction,
    split_file_path,
    write_split_file,
)
from engine.evaluation.curve_plan import (
    CurveProgress,
    CurveSettings,
    FROM_FOLDERS,
    KIND,
    PlannedRun,
    SETTINGS,
    check_settings,
    describe_plan,
    measure_seconds_per_step,
    plan_runs,
)
from engine.fileio import atomic_write_bytes

Log = Callable[[str], None]


def _digest(hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


@dataclass
class _Data:
    real: segdata.SegmentationSet
    tests: dict[str, tuple[segdata.SegmentationSet, list]]
    normals: tuple[segdata.SegmentationSet, list] | None
    parts: dict[float, Fraction]
    notes: list[str] = field(default_factory=list)  # shown in the report
    # (fraction, arm, test) → the test frames its generator trained on (engine.evaluation.generator_seen), or None
    generator_seen: dict = field(default_factory=dict)

    def write_split_files(self, out: Path) -> None:
        for part in self.parts.values():
            write_split_file(out, self.real.names, part)

    def add_note(self, note: str | None, log: Log) -> None:
        """A note for the report, logged once however many runs meet it."""
        if note and note not in self.notes:
            self.notes.append(note)
            log(note)


def _read_data(settings: CurveSettings, log: Log) -> _Data:
    from engine.evaluation.leaks import check_no_leak

    started = time.perf_counter()
    real = segdata.from_folder(settings.train, cache=settings.cache)
    tests = {name: segdata.hashed_entries(folder) for name, folder in settings.tests.items()}
    normals = segdata.hashed_entries(settings.normals) if settings.normals is not None else None
    val = segdata.from_folder(settings.val, cache=settings.cache) if settings.val is not None else None
    for name, (test, _) in tests.items():
        check_no_leak(real, None, test)
        if val is not None:
            check_no_leak(val, None, test)
    if val is not None and set(val.sha256) & set(real.sha256):
        raise InputError(f"--val {settings.val}: {len(set(val.sha256) & set(real.sha256))} of its frames are also "
                         "training frames (same bytes); the validation frames must be apart")
    if normals is not None:
        check_no_leak(real, None, normals[0])
    parts = {f: make_fraction(real, f, val, settings.subset_draw) for f in sorted(settings.fractions)}
    log(f"read {len(real)} real training frames, test sets {', '.join(f'{n} ({len(t[0])})' for n, t in tests.items())}"
        + (f", {len(normals[0])} polyp-free frames" if normals else "")
        + f" in {time.perf_counter() - started:.0f} s; leak check passed (sha256)")
    return _Data(real, tests, normals, parts)


# ------------------------------------------------------------------------------------------------ the plan
class _Progress:
    """Training steps done against the step caps of the runs left; the ETA from this session's pace."""

    def __init__(self, total: int, on_progress: Callable[[CurveProgress], None] | None,
                 cancel: Callable[[], bool] | None):
        self.total, self.done, self.on_progress, self.cancel = total, 0, on_progress, cancel
        self.started, self.run = time.perf_counter(), None

    def emit(self, phase: str, message: str = "") -> None:
        if self.on_progress is None:
            return
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        self.on_progress(CurveProgress(phase, self.run, self.done, self.total, eta, message))

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            from engine.training.task import TrainingInterrupted

            raise TrainingInterrupted(f"cancelled in {self.run or 'the evaluation'}; rerun to resume it")

    def step(self) -> None:
        self.check_cancel()
        self.done += 1
        self.emit("train")

    def run_ended(self, cap: int, trained: int) -> None:
        """A run ended after training ``trained`` steps in this session, of the ``cap`` counted for it."""
        self.total -= max(0, cap - trained)


# ------------------------------------------------------------------------------------------------ running
def _prepare_out(settings: CurveSettings) -> None:
    out = Path(settings.out)
    path = out / SETTINGS
    if path.is_file() and not settings.fresh:
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("kind") != KIND:
            raise InputError(f"{out}: holds a single-comparison evaluation (--synthetic DIR); use another --out "
                             "folder, or --fresh to start over there")
        if previous.get("subset_draw", 0) != settings.subset_draw:  # its arms' variants were made from other frames
            raise InputError(f"{out}: holds the runs of subset draw {previous.get('subset_draw', 0)}, not "
                             f"{settings.subset_draw}; give each draw its own --out folder (or --fresh to start over)")
    if settings.fresh:
        for name in ("runs", "results", "synthetic", "subsets"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("report.json", "report.html", "learning_curve.png", "learning_curves.png", SETTINGS):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    record = {"kind": KIND, **{k: v for k, v in asdict(settings).items() if k != "fresh"}}
    atomic_write_bytes(path, (json.dumps(record, indent=1, default=str, sort_keys=True) + "\n").encode("utf-8"))


def _synthetic_for(settings: CurveSettings, data: _Data, part: Fraction, arm: str, progress: _Progress,
                   log: Log) -> segdata.SegmentationSet:
    """The arm's variants at this fraction (generated from the subset when the arm is a job file), source-checked."""
    from engine.evaluation.leaks import check_no_leak

    out = Path(settings.out)
    if arm not in settings.arms:
        folder = Path(settings.synthetic[part.fraction])
    else:
        progress.run = f"{part.label}/{arm} (batch job)"
        progress.emit("generate", f"{arm}: running {settings.arms[arm]} on the {len(part.train)} training frames of "
                                  f"fraction {part.label}")

        def on_event(event):
            if event.kind in ("variant", "failed", "skipped", "rejected"):
                progress.emit("generate", f"{arm} at {part.label}: {event.done}/{event.total} variants")

        folder, ran = generate_arm(settings.arms[arm], settings.train, split_file_path(out, part),
                                   out / "synthetic" / part.label / arm, on_event=on_event, cancel=progress.cancel)
        if ran:
            log(f"{arm} at fraction {part.label}: generated into {folder}")
    synthetic, note = check_sources(segdata.from_polypforge_output(folder, cache=settings.cache), part, arm)
    data.add_note(note, log)
    for test, _ in data.tests.values():
        check_no_leak(part.train, synthetic, test)
    return synthetic


def _score(predict, data: _Data) -> tuple[dict, dict | None]:
    """Scores of a trained model on every test set, and its false-positive rate on the polyp-free frames."""
    from engine.judge.accuracy import score_frames, summarise
    from engine.judge.scores import DEFAULT_THRESHOLD

    tests = {}
    for name, (test, entries) in data.tests.items():
        rows = score_frames(predict, entries)
        tests[name] = {"digest": _digest(test.sha256), "summary": summarise(rows), "frames": rows}
    normals = None
    if data.normals is not None:
        rows = score_frames(predict, data.normals[1])
        normals = _normals_record(data.normals[0], rows, DEFAULT_THRESHOLD)
    return tests, normals


def _normals_record(normal_set, rows: list[dict], threshold: float) -> dict:
    """The share of polyp-free frames whose frame polyp score (engine.judge.scores.peak_score) passes the threshold."""
    flagged = [r["frame"] for r in rows if r["frame_score"] > threshold]
    return {"digest": _digest(normal_set.sha256), "frames": len(rows), "threshold": threshold,
            "false_positive_rate": len(flagged) / len(rows) if rows else None, "flagged": flagged}


def _train_judge(run: PlannedRun, pool, val, settings: CurveSettings, data: _Data, progress: _Progress) -> dict:
    from engine.evaluation.train_judge import best_network, judge_train_config, torch_predictor
    from engine.evaluation.evaluate import run_curve
    from engine.training.loop import train

    task = settings.judge_task(pool, val, description={"arm": run.arm, "fraction": run.fraction},
                               on_step=progress.step)
    config = judge_train_config(settings, seed=run.seed, warmup_steps=min(100, settings.max_steps // 10),
                                checkpoint_every=settings.validate_every, keep_checkpoints=2, ema_decay=0.999,
                                progress=False)
    result = train(task, config, run.run_dir(settings.out), resume=True)
    progress.emit("score", "scoring")
    tests, normals = _score(torch_predictor(task, best_network(task, result)), data)
    return {"steps": result.step, "stopped_early": result.stopped_early, "best_step": result.best_metrics.get("step"),
            "best_val_dice": result.best_metrics.get("val_dice"), "train_minutes": round(result.train_seconds / 60, 2),
            "curve": run_curve(result.run_dir), "tests": tests, "normals": normals}


def _train_ultralytics(run: PlannedRun, pool, val, settings: CurveSettings, data: _Data, python: Path,
                       log: Log) -> dict:
    """One YOLO run (engine.evaluation.ultralytics_trainer) scored on every test set and the polyp-free frames."""
    from engine.evaluation.ultralytics_trainer import CONFIDENCE_THRESHOLD, run_ultralytics
    from engine.judge.accuracy import summarise

    sets = [(name, test, entries) for name, (test, entries) in data.tests.items()]
    if data.normals is not None:
        sets.append((None, data.normals[0], data.normals[1]))
    entries = [entry for _, _, group in sets for entry in group]
    outcome = run_ultralytics(pool, val, entries, run.seed, settings, run.run_dir(settings.out), python, log)
    rows, tests, normals, start = outcome["rows"], {}, None, 0
    for name, test, group in sets:
        part, start = rows[start:start + len(group)], start + len(group)
        if name is None:
            normals = _normals_record(test, part, CONFIDENCE_THRESHOLD)
        else:
            tests[name] = {"digest": _digest(test.sha256), "summary": summarise(part), "frames": part}
    return {"steps": f"{outcome['epochs']} epochs", "stopped_early": None, "best_step": "epoch of best val fitness",
            "best_val_dice": None, "train_minutes": outcome["train_minutes"], "curve": outcome["curve"],
            "tests": tests, "normals": normals}


def _run_key(run: PlannedRun, settings: CurveSettings, pool, val) -> dict:
    """What a run's result depends on: a results file with another key is not this run."""
    trainer = {k: v for k, v in settings.trainer_settings().items() if k not in ("description", "stopping")}
    draw = {"subset_draw": settings.subset_draw} if settings.subset_draw else {}  # draw 0: keys as they always were
    return {"fraction": run.fraction, "arm": run.arm, "ratio": run.ratio, "seed": run.seed, **draw, "trainer": trainer,
            "pool_digest": pool.digest(), "val_digest": val.digest()}


def _refuse_other_settings(path: Path, record: dict, key: dict, run: PlannedRun, ignore: tuple[str, ...] = ()) -> None:
    """A results file made with other settings than this run's (its key, but for ``ignore``) is refused in one line
    naming what changed."""
    from engine.training.run_files import changed_settings

    changed = [name for name in changed_settings(record.get("key", {}), key) if name not in ignore]
    if changed:
        raise InputError(f"{path}: run {fraction_label(run.fraction)}/{run.name} was made with other settings "
                         f"({', '.join(changed)}); use --fresh to start over, or another --out folder")


def _reusable(path: Path, key: dict, data: _Data, run: PlannedRun) -> dict | None:
    """The earlier result of this run when its key matches and it scored these test sets; None to train it.
    A result made with other settings is refused (one line naming what changed)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    _refuse_other_settings(path, record, key, run)
    wanted = {name: _digest(test.sha256) for name, (test, _) in data.tests.items()}
    have = {name: entry.get("digest") for name, entry in record.get("tests", {}).items()}
    normals_ok = data.normals is None or (record.get("normals") or {}).get("digest") == _digest(data.normals[0].sha256)
    return record if all(have.get(n) == d for n, d in wanted.items()) and normals_ok else None


def _rescore(record: dict, run: PlannedRun, settings: CurveSettings, pool, val, data: _Data) -> dict:
    """An earlier judge run scored on test sets added since, from its kept weights (no retraining)."""
    from safetensors.torch import load_file

    from engine.evaluation.train_judge import torch_predictor

    weights = run.run_dir(settings.out) / "best.safetensors"
    if settings.trainer != "judge" or not weights.is_file():
        return {}
    task = settings.judge_task(pool, val)
    net = task.build_model()
    net.load_state_dict(load_file(str(weights)))
    tests, normals = _score(torch_predictor(task, net.eval()), data)
    return {**record, "tests": tests, "normals": normals}


def _report_finished(settings: CurveSettings, data: _Data, runs: list[PlannedRun], started: float, log: Log) -> dict:
    """The report of the runs already finished in the folder: no batch job runs and nothing trains. A results file
    made with other settings is refused as a run would refuse it (its pool is not checked: that needs the arm's
    variants). Planned runs not finished stay in the report as "not run yet", except ablation series never run."""
    from engine.evaluation.curve_report import write_curve_report

    out = Path(settings.out)
    results: dict[float, dict[str, dict[int, dict]]] = {}
    shown = []
    for run in runs:
        path = run.result_path(out)
        if not path.is_file():
            if not run.ablation:
                shown.append(run)
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable results file ({error})") from error
        part = data.parts[run.fraction]
        _refuse_other_settings(path, record, _run_key(run, settings, part.train, part.val), run, ignore=("pool_digest",))
        results.setdefault(run.fraction, {}).setdefault(run.series, {})[run.seed] = record
        shown.append(run)
    done = sum(len(s) for f in results.values() for s in f.values())
    log(f"report of the {done} finished runs ({len(shown)} planned); nothing trained")
    return write_curve_report(out, settings, data, shown, results, time.perf_counter() - started)


def run_learning_curve(settings: CurveSettings, on_progress: Callable[[CurveProgress], None] | None = None,
                       cancel: Callable[[], bool] | None = None, log: Log = print, plan_only: bool = False,
                       report_only: bool = False) -> dict:
    """Run (or resume) the learning curve; the report's data (with "html" and "json": the files written).
    ``plan_only``: read the data, print the plan, write the subsets' split files and stop. ``report_only``: write
    the report of the runs finished in the folder so far, and stop (no job, no training)."""
    import torch

    from engine.evaluation import ultralytics_trainer
    from engine.evaluation.curve_report import write_curve_report

    check_settings(settings)
    if settings.subset_draws:
        raise ValueError("subset_draws is run by engine.evaluation.subset_draws.run_curve, one curve per draw")
    python = (ultralytics_trainer.ultralytics_python(settings.ultralytics_python)
              if settings.trainer == "ultralytics" else None)
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    started = time.perf_counter()
    data = _read_data(settings, log)
    runs = plan_runs(settings)
    if report_only:
        return _report_finished(settings, data, runs, started, log)
    smallest = data.parts[min(data.parts)]
    per_step = measure_seconds_per_step(settings, smallest.train) if settings.trainer == "judge" else None
    plan = describe_plan(settings, runs, per_step, torch.get_num_threads())
    for line in plan:
        log(line)
    out = Path(settings.out)
    if plan_only:
        data.write_split_files(out)
        return {"plan": plan, "runs": len(runs)}
    progress = _Progress(0, on_progress, cancel)
    # Folders given beforehand are checked before anything is written or trained; a job's output once it has run.
    synthetic_sets = {(fraction, FROM_FOLDERS): _synthetic_for(settings, data, data.parts[fraction], FROM_FOLDERS,
                                                                progress, log)
                      for fraction in settings.synthetic}
    _prepare_out(settings)
    data.write_split_files(out)
    progress.total = sum(settings.max_steps for r in runs if not r.result_path(out).is_file())
    results: dict[float, dict[str, dict[int, dict]]] = {}

    def report() -> dict:
        return write_curve_report(out, settings, data, runs, results, time.perf_counter() - started)

    for run in runs:
        progress.check_cancel()
        part = data.parts[run.fraction]
        progress.run = f"{part.label}/{run.name}"
        pool = part.train
        if run.arm != REAL:
            components = settings.components(run.arm)  # a mix draws from the pools of the arms it names
            for arm in components:
                if (run.fraction, arm) not in synthetic_sets:
                    synthetic_sets[(run.fraction, arm)] = _synthetic_for(settings, data, part, arm, progress, log)
                    progress.run = f"{part.label}/{run.name}"
            drawn, short = draw_mixed([synthetic_sets[(run.fraction, arm)] for arm in components], len(part.train),
                                      run.ratio)
            if short:
                data.add_note(f"{run.series} at fraction {part.label}: ratio {run.ratio:g} {short}", log)
            pool = segdata.concatenate([part.train, drawn])
        key = _run_key(run, settings, pool, part.val)
        path = run.result_path(out)
        record = _reusable(path, key, data, run) if path.is_file() else None
        if record is None and path.is_file():
            record = _rescore(json.loads(path.read_text(encoding="utf-8")), run, settings, pool, part.val, data) or None
            if record is not None:
                atomic_write_bytes(path, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                log(f"{progress.run}: scored again on the test sets added since")
        if record is not None:
            log(f"{progress.run}: done earlier, reused")
        else:
            log(f"{progress.run}: training on {len(part.train)} real"
                + (f" + {len(pool) - len(part.train)} synthetic" if run.arm != REAL else "") + " frames")
            before = progress.done
            if python is not None:
                outcome = _train_ultralytics(run, pool, part.val, settings, data, python, log)
            else:
                outcome = _train_judge(run, pool, part.val, settings, data, progress)
            progress.run_ended(settings.max_steps, progress.done - before)
            record = {"key": key, "fraction": run.fraction, "arm": run.arm, "series": run.series, "ratio": run.ratio,
                      "seed": run.seed, "subset_frames": len(part.subset), "real_frames": len(part.train),
                      "synthetic_frames": len(pool) - len(part.train), "val_frames": len(part.val),
                      "budget": settings.trainer_settings(), **outcome}
            atomic_write_bytes(path, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            # Done for good: its checkpoints (~30 MB each) go; best.safetensors stays for scoring later test sets.
            shutil.rmtree(run.run_dir(out) / "checkpoints", ignore_errors=True)
            dice = ", ".join(f"{n} {t['summary']['dice']:.4f}" for n, t in record["tests"].items())
            log(f"{progress.run}: test Dice {dice} (steps {record['steps']}, best at {record['best_step']})")
        results.setdefault(run.fraction, {}).setdefault(run.series, {})[run.seed] = record
        report()
    progress.run = None
    progress.emit("done")
    return report()
