"""``main.py evaluate``: does training with the synthetic set help a segmenter on real frames it never saw?

For each seed, the downstream model (the judge's compact U-Net, engine.evaluation.judge_task) is trained
twice under the same budget (steps × batch size, same seed, same held-out real frames for picking the best
weights): on the real training frames alone ("real"), and on them plus the synthetic variants
("real+synthetic"; ``synthetic_cap`` limits the synthetic share of the training pool). Each is scored on the
real test set at its own resolution: Dice and IoU per frame, AP50 and AP@[.5:.95] from the masks' boxes.

Layout of the output folder (resumable: a killed evaluation resumes at the run it was in)::

    evaluation.json          the settings and data digests; a rerun with others is refused (or --fresh)
    runs/<arm>-seed<k>/      the trainer's run folder (checkpoints, log.jsonl, loss.png, samples/)
    results/<arm>-seed<k>.json   that run's test scores, written atomically when it is done
    report.json, report.html, learning_curves.png   rebuilt after every finished run

The leak check (engine.evaluation.leaks) runs before any training.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from engine.errors import InputError
from engine.evaluation import segdata
from engine.models.segmenter import DEFAULT_WIDTHS
from engine.fileio import atomic_write_bytes
from engine.training.run_files import LOG, changed_settings, read_log, read_record, write_record

Log = Callable[[str], None]
ARMS = ("real", "real+synthetic")
SETTINGS = "evaluation.json"


@dataclass
class EvaluationSettings:
    train: Path
    synthetic: Path
    test: Path
    out: Path
    seeds: int = 3
    synthetic_cap: float | None = None  # max share of synthetic frames in the training pool
    steps: int = 600
    size: int = 128
    batch_size: int = 8
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    lr: float = 2e-3
    validate_every: int = 100
    threads: int | None = None
    fresh: bool = False
    trainer: str = "judge"  # or "ultralytics" (engine.evaluation.ultralytics_trainer)
    ultralytics_epochs: int | None = None  # None: from the budget (steps × batch over the pool)
    ultralytics_python: str | None = None  # the Ultralytics environment's Python (None: found)
    progress: bool = True
    cache: int = segdata.DEFAULT_CACHE

    def shaping(self, digests: dict) -> dict:
        values = asdict(self)
        for key in ("out", "threads", "fresh", "progress", "seeds", "ultralytics_python"):
            values.pop(key)
        values = {k: (str(Path(v).resolve()) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v))
                  for k, v in values.items()}
        return {**values, **digests}


def cap_synthetic(real_count: int, synthetic: segdata.SegmentationSet, cap: float | None):
    """The synthetic variants kept so they are at most `cap` of the pool: the first by sha256 of their names."""
    if cap is None or cap >= 1.0 or not len(synthetic):
        return synthetic
    if cap <= 0.0:
        return synthetic.subset([])
    allowed = int(cap / (1.0 - cap) * real_count)
    order = sorted(range(len(synthetic)), key=lambda i: hashlib.sha256(synthetic.names[i].encode()).hexdigest())
    return synthetic.subset(sorted(order[:allowed]))


def _check_settings(out: Path, record: dict, fresh: bool) -> None:
    """Refuse an ``out`` folder made with other settings or data (the trainer's own comparison of settings
    records); ``fresh`` clears what an earlier evaluation left there. Then record these settings."""
    path = out / SETTINGS
    if fresh:
        for name in ("runs", "results"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("report.json", "report.html", "learning_curves.png"):
            (out / name).unlink(missing_ok=True)
    elif path.is_file():
        previous = read_record(path)
        changed = changed_settings(previous, record) if previous is not None else []
        if changed:
            raise InputError(f"{out}: holds an evaluation made with other settings or data ({', '.join(changed)}); "
                             "use --fresh to start over there, or another --out folder")
    write_record(path, record)


def run_curve(run_dir: Path) -> list[dict]:
    """The learning curve of a run from its log (the trainer's reader): validation Dice / IoU, else the loss."""
    rows = []
    for row in read_log(run_dir / LOG):
        if "val_dice" in row:
            rows.append({"step": row["step"], "val_dice": row["val_dice"], "val_iou": row.get("val_iou")})
        elif "loss" in row:
            rows.append({"step": row["step"], "loss": row["loss"]})
    return rows


def run_evaluation(settings: EvaluationSettings, log: Log = print) -> dict:
    import torch

    from engine.evaluation.leaks import check_no_leak
    from engine.judge.accuracy import score_frames, summarise
    from engine.evaluation.judge_task import JudgeTask
    from engine.evaluation.train_judge import best_network, judge_train_config, torch_predictor
    from engine.training.loop import train

    from engine.evaluation import ultralytics_trainer

    if settings.trainer not in ("judge", "ultralytics"):
        raise InputError(f"--trainer {settings.trainer}: not one of judge, ultralytics")
    python = ultralytics_trainer.ultralytics_python(settings.ultralytics_python) if settings.trainer == "ultralytics" else None
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    real = segdata.from_folder(settings.train, cache=settings.cache)
    synthetic = segdata.from_polypforge_output(settings.synthetic, cache=settings.cache)
    test, test_entries = segdata.hashed_entries(settings.test)
    check_no_leak(real, synthetic, test)
    from engine.evaluation.generator_seen import seen_test_frames

    seen = seen_test_frames([Path(settings.synthetic)], list(test.names), list(test.sha256))
    log(f"read {len(real)} real training frames, {len(synthetic)} synthetic variants, {len(test)} test frames "
        f"in {time.perf_counter() - started:.0f} s; leak check passed (sha256 of frames and variant sources)")
    # By rank: the test set is often the frames the same hash holds out, which leaves none below the threshold.
    kept, held = segdata.holdout(real.names, by_rank=True)
    real_train, real_val = real.subset(kept), real.subset(held)
    val_shas = set(real_val.sha256)
    warnings = []
    if seen is not None and seen.names:
        warnings.append(f"the model that painted the synthetic frames ({', '.join(seen.bundles)}) trained on "
                        f"{len(seen.names)} of the {len(test)} test frames: the gain there is an upper bound; the "
                        "difference on the others is reported beside the one on all")
    outside_val = [i for i, s in enumerate(synthetic.source_sha256) if s not in val_shas]
    if len(outside_val) < len(synthetic):
        warnings.append(f"{len(synthetic) - len(outside_val)} synthetic variants made from the held-out validation "
                        "frames were left out (they would bias the choice of weights)")
    synthetic_used = cap_synthetic(len(real_train), synthetic.subset(outside_val), settings.synthetic_cap)
    pools = {"real": real_train, "real+synthetic": segdata.concatenate([real_train, synthetic_used])}
    digests = {"train_digest": real.digest(), "synthetic_digest": synthetic.digest(),
               "test_digest": hashlib.sha256("\n".join(test.sha256).encode()).hexdigest()}
    _check_settings(out, settings.shaping(digests), settings.fresh)
    log(f"arms: real = {len(real_train)} frames; real+synthetic = {len(real_train)} + {len(synthetic_used)} "
        f"variants; {len(real_val)} real frames held out for picking weights")

    results: dict = {arm: {} for arm in ARMS}
    for seed in range(settings.seeds):
        for arm in ARMS:
            name = f"{arm.replace('+', '-')}-seed{seed}"
            result_path = out / "results" / f"{name}.json"
            if result_path.is_file():
                try:
                    results[arm][seed] = json.loads(result_path.read_text(encoding="utf-8"))
                    log(f"{name}: done earlier, reused")
                    continue
                except ValueError:
                    pass
            if python is not None:
                log(f"{name}: training on {len(pools[arm])} frames")
                run = ultralytics_trainer.run_ultralytics(pools[arm], real_val, test_entries, seed, settings,
                                                          out / "runs" / name, python, log)
                summary = summarise(run["rows"])
                log(f"{name}: test Dice {summary['dice']:.4f}, IoU {summary['iou']:.4f}, AP50 {summary['ap50']}, "
                    f"AP {summary['ap']}")
                record = {"arm": arm, "seed": seed, "summary": summary, "frames": run["rows"], "curve": run["curve"],
                          "best_step": f"epoch of best val fitness (of {run['epochs']})",
                          "train_minutes": run["train_minutes"], "training_frames": len(pools[arm])}
                atomic_write_bytes(result_path, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                results[arm][seed] = record
                _write(out, settings, results, real, real_val, synthetic, synthetic_used, test, warnings, started, seen)
                continue
            task = JudgeTask(pools[arm], real_val, size=settings.size, batch_size=settings.batch_size,
                             widths=settings.widths, description={"arm": arm})
            config = judge_train_config(settings, seed=seed, warmup_steps=min(100, settings.steps // 10),
                                        checkpoint_every=max(1, settings.validate_every), ema_decay=0.999)
            log(f"{name}: training {settings.steps} steps on {len(pools[arm])} frames")
            run = train(task, config, out / "runs" / name, resume=True)
            net = best_network(task, run)
            rows = score_frames(torch_predictor(task, net), test_entries)
            summary = summarise(rows)
            log(f"{name}: test Dice {summary['dice']:.4f}, IoU {summary['iou']:.4f}, AP50 {summary['ap50']}, "
                f"AP {summary['ap']}")
            record = {"arm": arm, "seed": seed, "summary": summary, "frames": rows, "curve": run_curve(run.run_dir),
                      "best_step": run.best_metrics.get("step"), "train_minutes": round(run.train_seconds / 60, 2),
                      "training_frames": len(pools[arm])}
            atomic_write_bytes(result_path, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            results[arm][seed] = record
            _write(out, settings, results, real, real_val, synthetic, synthetic_used, test, warnings, started, seen)
    return _write(out, settings, results, real, real_val, synthetic, synthetic_used, test, warnings, started, seen)


def _write(out, settings, results, real, real_val, synthetic, synthetic_used, test, warnings, started,
           seen=None) -> dict:
    from engine.evaluation.evaluation_report import paired, summarise_runs, write_evaluation_report
    from engine.evaluation.generator_seen import unseen_difference

    complete = all(results[a] for a in ARMS)

    data = {
        "arms": list(ARMS),
        "seeds": list(range(settings.seeds)),
        "train": {"folder": str(settings.train), "frames": len(real), "val_frames": len(real_val)},
        "synthetic": {"folder": str(settings.synthetic), "frames": len(synthetic), "used": len(synthetic_used),
                      "cap": settings.synthetic_cap},
        "test": {"folder": str(settings.test), "frames": len(test)},
        "trainer": _trainer_description(settings),
        "warnings": warnings,
        "summary": summarise_runs(results, ARMS),
        "difference": paired(results, ARMS) if complete else None,
        # the test frames the synthetic frames' generator never trained on (engine.evaluation.generator_seen)
        "generator_seen": seen.to_json(len(test)) if seen is not None and seen.names else None,
        "difference_unseen": (unseen_difference(results[ARMS[0]], results[ARMS[1]], seen.names, ARMS)
                              if complete and seen is not None and seen.names else None),
        "runs": {arm: {str(seed): run for seed, run in runs.items()} for arm, runs in results.items()},
        "minutes_this_session": round((time.perf_counter() - started) / 60.0, 2),
    }
    html_path, json_path = write_evaluation_report(out, data)
    data["html"], data["json"] = str(html_path), str(json_path)
    return data


def _trainer_description(settings: EvaluationSettings) -> dict:
    if settings.trainer == "ultralytics":
        from engine.evaluation.ultralytics_trainer import describe

        return describe(settings)
    return {"name": "judge", "description": "the judge's compact U-Net trained from scratch", "steps": settings.steps,
            "batch_size": settings.batch_size, "size": settings.size, "widths": list(settings.widths),
            "lr": settings.lr, "threshold": 0.5, "curve_metric": "val_dice"}
