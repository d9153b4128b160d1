"""``evaluate --subset-draws N``: the learning curve on N independent real subsets, and its arms compared over them.

At a fraction every seed of a curve trains on one subset, so a p over seeds says how sure a difference is *for those
frames*. Whether it holds for a curator's frames is a question over subsets: ``run_subset_draws`` runs the curve once
per subset draw (``CurveSettings.subset_draw`` = 1 … N, engine.evaluation.curve_arms.subset_salt), each in OUT/draw-K
with its own report (a killed run resumes where it was; finished draws are reused), and after every draw writes the
comparison over the draws finished so far (``summarize``): per fraction and test set, each arm's Dice per draw (its
mean over the draw's seeds when there are several), and each arm against each **base** — ``real``, and every
copy-paste arm (a transplant job that pastes without a model: the honest baseline) — paired by draw: the mean
difference with its t-based 95 % CI, a paired t-test over draws, the Wilcoxon test over test frames (Dice averaged
over draws; engine.evaluation.evaluation_report.paired), the draws won, and per polyp size
(engine.evaluation.curve_report.size_breakdown). Written to OUT/draws.json, OUT/draws.md and OUT/draws.html.

``run_curve(settings, …)`` is the one entry of the command and the app: the draws when ``settings.subset_draws`` is
set, else the one curve (engine.evaluation.learning_curve.run_learning_curve).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.evaluation.curve_arms import REAL, fraction_label
from engine.evaluation.curve_plan import CurveProgress, CurveSettings, plan_runs  # noqa: F401  (the app's lab)
from engine.evaluation.learning_curve import run_learning_curve
from engine.fileio import atomic_write_bytes

DRAW_PREFIX = "draw-"
SUMMARY_NAMES = ("draws.json", "draws.md", "draws.html")
Log = Callable[[str], None]


def draw_folder(out: Path, draw: int) -> Path:
    return Path(out) / f"{DRAW_PREFIX}{draw}"


def draw_settings(settings: CurveSettings, draw: int) -> CurveSettings:
    """The one curve of draw ``draw``: its subset, its folder, and one seed unless ``seeds`` is given (draws, not
    seeds, are what the comparison pairs)."""
    return replace(settings, subset_draws=0, subset_draw=draw, out=draw_folder(settings.out, draw),
                   seeds=settings.seeds if settings.seeds is not None else 1)


def run_curve(settings: CurveSettings, on_progress: Callable[[CurveProgress], None] | None = None,
              cancel: Callable[[], bool] | None = None, log: Log = print, plan_only: bool = False,
              report_only: bool = False) -> dict:
    """The evaluation the settings ask: the curve over ``subset_draws`` draws, or the one curve."""
    if settings.subset_draws:
        return run_subset_draws(settings, on_progress, cancel, log, plan_only, report_only)
    return run_learning_curve(settings, on_progress, cancel, log, plan_only, report_only)


def run_subset_draws(settings: CurveSettings, on_progress: Callable[[CurveProgress], None] | None = None,
                     cancel: Callable[[], bool] | None = None, log: Log = print, plan_only: bool = False,
                     report_only: bool = False) -> dict:
    """Draws 1 … ``settings.subset_draws`` in turn, the summary rewritten after each; its data ("html", "json",
    "verdicts"), or with ``plan_only`` every draw's plan ("plan", "runs")."""
    count = settings.subset_draws
    if not isinstance(count, int) or count < 1:
        raise InputError(f"--subset-draws {count}: must be a whole number, 1 or more")
    if settings.subset_draw:
        raise InputError("--subset-draws N runs draws 1 … N, each in OUT/draw-K: leave --subset-draw out")
    plan, planned, done = [], 0, 0
    summary = None
    for draw in range(1, count + 1):
        log(f"subset draw {draw} of {count}: {draw_folder(settings.out, draw)}")
        data = run_learning_curve(draw_settings(settings, draw), on_progress, cancel, log, plan_only, report_only)
        if plan_only:
            plan += [f"subset draw {draw} of {count}:", *data["plan"]]
            planned += data["runs"]
            continue
        done += data["runs_done"]
        summary = write_summary(settings)
    if plan_only:
        return {"plan": plan, "runs": planned}
    return {**summary, "runs_done": done}


# ------------------------------------------------------------------------------------------------ reading
def copy_paste_arms(settings: CurveSettings) -> list[str]:
    """The arms whose job pastes the subset's own polyps without a model (mode transplant, harmonize none; a job that
    leaves harmonize out gets the batch job's default, which redraws with the model)."""
    from engine.jobs import read_job_file
    from engine.transplant import DEFAULT_HARMONIZE

    found = []
    for arm, job in settings.arms.items():
        values = read_job_file(job)
        if values.get("mode") == "transplant" and values.get("harmonize", DEFAULT_HARMONIZE) == "none":
            found.append(arm)
    return found


def _mean_record(records: list[dict]) -> dict:
    """One draw's record of a test set from its seeds' records: summaries and per-frame scores averaged."""
    if len(records) == 1:
        return records[0]
    summary = {key: float(np.mean([r["summary"][key] for r in records])) if all(
        r["summary"].get(key) is not None for r in records) else None for key in ("dice", "iou", "ap50", "ap")}
    by_frame: dict[str, list[dict]] = {}
    for record in records:
        for row in record["frames"]:
            by_frame.setdefault(row["frame"], []).append(row)
    frames = [{**rows[0], "dice": float(np.mean([r["dice"] for r in rows])),
               "iou": float(np.mean([r["iou"] for r in rows]))} for rows in by_frame.values()
              if len(rows) == len(records)]
    return {"summary": summary, "frames": frames}


def read_results(settings: CurveSettings) -> dict[tuple[float, str], dict[int, list[dict]]]:
    """(fraction, arm) → draw → the results records of its finished seeds, for draws 1 … ``subset_draws``; each
    file read once."""
    found: dict[tuple[float, str], dict[int, list[dict]]] = {}
    for draw in range(1, settings.subset_draws + 1):
        one = draw_settings(settings, draw)
        for run in plan_runs(one):
            path = run.result_path(one.out)
            if not run.ablation and path.is_file():
                record = json.loads(path.read_text(encoding="utf-8"))
                found.setdefault((run.fraction, run.arm), {}).setdefault(draw, []).append(record)
    return found


def draw_runs(results: dict, fraction: float, arm: str, test: str) -> dict[int, dict]:
    """draw → the arm's record on ``test`` at ``fraction`` (over the draw's finished seeds that scored it), from
    ``read_results``."""
    runs = {}
    for draw, records in sorted(results.get((fraction, arm), {}).items()):
        scored = [record["tests"][test] for record in records if test in record.get("tests", {})]
        if scored:
            runs[draw] = _mean_record(scored)
    return runs


# ------------------------------------------------------------------------------------------------ the summary
def _comparison(runs: dict[str, dict[int, dict]], base: str, arm: str, test: str) -> dict:
    from engine.evaluation.curve_report import size_breakdown
    from engine.evaluation.evaluation_report import paired

    draws = sorted(set(runs[base]) & set(runs[arm]))
    pair = {base: {d: runs[base][d] for d in draws}, arm: {d: runs[arm][d] for d in draws}}
    difference = paired(pair, (base, arm))
    won = sum(pair[arm][d]["summary"]["dice"] > pair[base][d]["summary"]["dice"] for d in draws)
    sizes = size_breakdown({name: {d: {"tests": {test: r}} for d, r in by_draw.items()} for name, by_draw in
                            pair.items()}, [base, arm], test, base=base)
    by_size = [{"bin": label, "frames": sizes["frames"][label],
                "base_dice": sizes["arms"][base][label]["dice"]["mean"],
                "dice": sizes["arms"][arm][label]["dice"]["mean"],
                "difference": sizes["arms"][arm][label].get("difference")} for label in sizes["bins"]]
    return {"base": base, "arm": arm, "draws": draws, "won": won, "dice": difference["dice"],
            "per_frame_dice": difference["per_frame_dice"], "by_size": by_size}


def summarize(settings: CurveSettings, results: dict | None = None) -> dict:
    """The comparison over the draws finished so far (draws.json's contents); ``results``: ``read_results``'s, when
    the caller has read them."""
    results = read_results(settings) if results is None else results
    bases = [REAL, *copy_paste_arms(settings)]
    arms = settings.arm_names()
    points = []
    for fraction in sorted(settings.fractions):
        for test in settings.tests:
            runs = {arm: draw_runs(results, fraction, arm, test) for arm in arms}
            comparisons = [_comparison(runs, base, arm, test) for base in bases for arm in arms
                           if arm != base and arm != REAL and len(set(runs[base]) & set(runs[arm])) >= 2]
            points.append({"fraction": fraction, "test": test,
                           "dice": {arm: {str(d): r["summary"]["dice"] for d, r in sorted(runs[arm].items())}
                                    for arm in arms},
                           "comparisons": comparisons})
    verdicts = [verdict(point, comparison) for point in points for comparison in point["comparisons"]]
    return {"kind": "learning-curve-draws", "draws_planned": settings.subset_draws, "arms": arms, "bases": bases,
            "points": points, "verdicts": [{"text": text} for text in verdicts]}


def verdict(point: dict, comparison: dict) -> str:
    d = comparison["dice"]
    low, high = d.get("ci95") or (None, None)
    interval = f", 95 % CI [{low:+.3f}, {high:+.3f}]" if low is not None else ""
    p = f"p = {d['p_value']:.2g}" if d.get("p_value") is not None else "no spread between draws"
    return (f"{comparison['arm']} vs {comparison['base']} on {point['test']} at fraction "
            f"{fraction_label(point['fraction'])}: {d['mean']:+.3f} Dice over {len(comparison['draws'])} subset "
            f"draws ({p}{interval}; won {comparison['won']} of {len(comparison['draws'])})")


def tables(summary: dict) -> list[tuple[str, list[list[str]]]]:
    """(title, rows with the header first) of every table of the summary, for the markdown and the page."""
    from engine.evaluation.curve_report import p_text, signed_cell

    out = []
    for point in summary["points"]:
        where = f"fraction {fraction_label(point['fraction'])}, test set {point['test']}"
        draws = sorted({int(d) for by_draw in point["dice"].values() for d in by_draw})
        arms = [arm for arm in summary["arms"] if point["dice"][arm]]
        rows = [["draw", *arms]] + [[str(d), *(f"{point['dice'][arm][str(d)]:.3f}" if str(d) in point["dice"][arm]
                                               else "–" for arm in arms)] for d in draws]
        out.append((f"Dice per subset draw ({where})", rows))
        if point["comparisons"]:
            rows = [["arm − base", "draws", "Dice (95 % CI)", "p (draws)", "p (frames)", "draws won"]]
            rows += [[f"{c['arm']} − {c['base']}", str(len(c["draws"])), signed_cell(c["dice"]),
                      p_text(c["dice"]["p_value"]), p_text(c["per_frame_dice"]["p_value"]),
                      f"{c['won']} of {len(c['draws'])}"] for c in point["comparisons"]]
            out.append((f"Paired by draw ({where})", rows))
            rows = [["arm − base", "polyp size (share of frame)", "test frames", "base Dice", "arm Dice",
                     "Δ (95 % CI)"]]
            rows += [[f"{c['arm']} − {c['base']}", s["bin"], str(s["frames"]), f"{s['base_dice']:.3f}",
                      f"{s['dice']:.3f}", signed_cell(s["difference"])]
                     for c in point["comparisons"] for s in c["by_size"]]
            out.append((f"Per polyp size, paired by draw ({where})", rows))
    return out


def _intro(summary: dict) -> tuple[str, str, list[str]]:
    """The summary's title, its paragraph and its verdict lines, for the markdown and the page."""
    done = sorted({int(d) for p in summary["points"] for by_draw in p["dice"].values() for d in by_draw})
    paragraph = (f"Draws with finished runs: {len(done)} of {summary['draws_planned']}. Each draw is another subset "
                 "of the real frames of the same size (OUT/draw-K, its own report); bases: "
                 + ", ".join(summary["bases"]) + ". p (draws): paired t-test over draws; p (frames): Wilcoxon over "
                 "test frames, Dice averaged over draws.")
    verdicts = [v["text"] for v in summary["verdicts"]] or ["fewer than two draws with both arms: no comparison yet"]
    return f"The learning curve over {summary['draws_planned']} subset draws", paragraph, verdicts


def markdown(summary: dict) -> str:
    title, paragraph, verdicts = _intro(summary)
    lines = [f"# {title}", "", paragraph, "", *(f"- {text}" for text in verdicts)]
    for heading, rows in tables(summary):
        lines += ["", f"## {heading}", "", "| " + " | ".join(rows[0]) + " |", "|---" * len(rows[0]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def render_html(summary: dict) -> str:
    e = html.escape
    title, paragraph, verdicts = _intro(summary)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>PolypForge: the learning curve over subset "
             "draws</title><style>body{font-family:sans-serif;margin:24px;max-width:1200px;color:#222}"
             "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left}th{background:#f2f2f2}</style></head><body>",
             f"<h1>{e(title)}</h1><p>{e(paragraph)}</p><ul>", *(f"<li>{e(text)}</li>" for text in verdicts), "</ul>"]
    for heading, rows in tables(summary):
        parts.append(f"<h2>{e(heading)}</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in rows[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows[1:]]
        parts.append("</table>")
    parts.append("<p>Each draw's own report: draw-K/report.html.</p></body></html>")
    return "".join(parts)


def write_summary(settings: CurveSettings) -> dict:
    """OUT/draws.json, draws.md and draws.html from the draws finished so far; the summary with "json", "html"."""
    summary = summarize(settings)
    out = Path(settings.out)
    json_path, md_path, html_path = (out / name for name in SUMMARY_NAMES)
    atomic_write_bytes(json_path, (json.dumps(summary, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
                       .encode("utf-8"))
    atomic_write_bytes(md_path, markdown(summary).encode("utf-8"))
    atomic_write_bytes(html_path, render_html(summary).encode("utf-8"))
    return {**summary, "json": str(json_path), "html": str(html_path), "markdown": str(md_path)}
