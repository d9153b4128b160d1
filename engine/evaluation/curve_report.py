"""The learning curve's figures and pages: per fraction, arm and test set the mean over seeds with its t-based 95 %
confidence interval; each arm's paired difference from ``real`` (per seed: same seed, same real frames, same
validation frames) with its confidence interval, a paired t-test over seeds and a Wilcoxon test over test frames
(engine.evaluation.evaluation_report.paired); a one-sentence verdict per arm and test set naming each fraction;
the learning-curve plot (Dice against the number of real frames, one line per arm, 95 % bands); per size bin of the
test frames' polyps (share of the frame), each arm's mean Dice and its paired difference from ``real`` — where an
arm helps, not only whether; report.json and a self-contained report.html, each written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.evaluation.curve_arms import REAL, VAL_FRACTION, fraction_label
from engine.evaluation.evaluation_report import METRICS, confidence_interval, mean_std, paired
from engine.fileio import atomic_write_bytes
from engine.masks.size_prior import SIZE_BIN_LABELS, size_bin

SIGNIFICANCE = 0.05
PALETTE = [(33, 102, 172), (214, 96, 77), (27, 158, 119), (117, 112, 179), (230, 171, 2), (102, 102, 102)]


def _stats(values) -> dict:
    values = [v for v in values if v is not None]
    return {**mean_std(values), "ci95": confidence_interval(values)}


def _arm_entry(runs: dict, tests: list[str]) -> dict:
    """Mean, std and 95 % CI over seeds of each metric on each test set, the polyp-free false-positive rate and
    the budget each run used."""
    records = [runs[seed] for seed in sorted(runs)]
    entry = {"runs": len(records), "seeds": sorted(runs),
             "synthetic_frames": records[0]["synthetic_frames"] if records else None,
             "steps": [r["steps"] for r in records], "best_steps": [r["best_step"] for r in records],
             "train_minutes": [r["train_minutes"] for r in records], "tests": {}}
    for test in tests:
        scored = [r["tests"][test]["summary"] for r in records if test in r.get("tests", {})]
        entry["tests"][test] = {metric: _stats(s[metric] for s in scored) for metric in METRICS}
    normals = [r["normals"]["false_positive_rate"] for r in records if r.get("normals")]
    entry["normals_false_positive_rate"] = _stats(normals) if normals else None
    return entry


def _difference(results_at: dict, series: str, test: str) -> dict | None:
    base, other = results_at.get(REAL, {}), results_at.get(series, {})
    seeds = sorted(s for s in set(base) & set(other) if test in base[s]["tests"] and test in other[s]["tests"])
    if not seeds:
        return None
    pairs = {REAL: {s: base[s]["tests"][test] for s in seeds}, series: {s: other[s]["tests"][test] for s in seeds}}
    return paired(pairs, (REAL, series))


def pool_folders(settings, part, arm: str) -> list[Path] | None:
    """Where the pools an arm draws from were generated (a mix: each of its arms'), as the curve writes them: a job
    arm's in OUT/synthetic/<fraction>/<arm>, the folder of ``--synthetic FRACTION=DIR``; None when an arm is neither
    in this call (a report of runs whose arm was not given again)."""
    from engine.evaluation.curve_plan import FROM_FOLDERS

    folders = []
    for component in settings.components(arm):
        if component in settings.arms:  # a job file's arm, also one named "synthetic" (the default preset)
            folders.append(Path(settings.out) / "synthetic" / part.label / component)
        elif component == FROM_FOLDERS and part.fraction in settings.synthetic:
            folders.append(Path(settings.synthetic[part.fraction]))
        else:
            return None
    return folders


def _unseen_differences(settings, data, runs, part, results_at: dict, series: list[str], tests: list[str]) -> dict:
    """Per generated series and test set: how many test frames the models that painted its pool trained on, and its
    paired difference from real on the others (engine.evaluation.generator_seen); only where some were seen."""
    from engine.evaluation.generator_seen import seen_test_frames, unseen_difference

    arm_of = {run.series: run.arm for run in runs}
    cache = data.generator_seen  # (fraction, arm, test) → SeenFrames or None, read once per curve call
    out = {}
    for name in series:
        if name == REAL or name not in arm_of or name not in results_at or REAL not in results_at:
            continue
        for test in tests:
            key = (part.fraction, arm_of[name], test)
            if key not in cache:
                test_set = data.tests[test][0]
                folders = pool_folders(settings, part, arm_of[name])
                cache[key] = (None if folders is None else
                              seen_test_frames(folders, list(test_set.names), list(test_set.sha256)))
            seen = cache[key]
            if seen is None or not seen.names:
                continue
            base = {s: r["tests"][test] for s, r in results_at[REAL].items() if test in r.get("tests", {})}
            other = {s: r["tests"][test] for s, r in results_at[name].items() if test in r.get("tests", {})}
            diff = unseen_difference(base, other, seen.names, (REAL, name))
            out.setdefault(name, {})[test] = {**seen.to_json(len(data.tests[test][0])), "difference": diff}
    return out


def _unseen_notes(points: list[dict]) -> list[str]:
    """One line per generated arm and test set whose generator trained on some test frames: how many, and the arm's
    gain on the others at each fraction."""
    lines = {}
    for point in points:
        for arm, by_test in point.get("unseen", {}).items():
            for test, entry in by_test.items():
                diff = entry["difference"]
                key = (arm, test)
                head = (f"{arm}: the model that painted its frames ({', '.join(entry['generators'])}) trained on "
                        f"{entry['seen']} of the {entry['seen'] + entry['unseen']} {test} test frames, so its gain "
                        f"there is an upper bound; on the {entry['unseen']} it never saw, against real: ")
                clause = (f"{diff['dice']['mean']:+.3f} Dice at {point['subset_frames']} frames"
                          + (f" (p = {diff['dice']['p_value']:.2g})" if diff["dice"]["p_value"] is not None else "")
                          if diff is not None and diff["dice"]["mean"] is not None else
                          f"no paired runs at {point['subset_frames']} frames")
                lines.setdefault(key, [head, []])[1].append(clause)
    return [head + "; ".join(clauses) for head, clauses in lines.values()]


def _clause(diff: dict | None, frames: int) -> str:
    if diff is None:
        return f"not run yet at {frames} frames"
    d = diff["dice"]
    if d["mean"] is None:
        return f"no scores at {frames} frames"
    interval = (f", 95 % CI {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}" if d.get("ci95") else "")
    if d["n"] < 2:
        return f"{d['mean']:+.3f} Dice at {frames} frames (one seed: no test)"
    p = d["p_value"]
    p_text = f"p = {p:.2g}" if p is not None else "no spread between seeds"
    if p is not None and p < SIGNIFICANCE:
        return f"{d['mean']:+.3f} Dice at {frames} frames ({p_text}{interval})"
    return f"no significant effect at {frames} frames ({d['mean']:+.3f}, {p_text}{interval})"


def _frame_polyp_share(row: dict) -> float | None:
    """A scored test frame's labelled polyp pixels over its pixels (None for a polyp-free frame)."""
    area = sum(box.get("area", 0) for box in row.get("truth_boxes", []))
    pixels = row.get("width", 0) * row.get("height", 0)
    return area / pixels if area and pixels else None


def _dice_by_size(record: dict, test: str) -> dict[str, list[float]]:
    """{size bin: [Dice of each test frame whose polyps cover that share of it]} of one run."""
    bins: dict[str, list[float]] = {}
    for row in record.get("tests", {}).get(test, {}).get("frames", []):
        share = _frame_polyp_share(row)
        if share is not None and row.get("dice") is not None:
            bins.setdefault(size_bin(share), []).append(float(row["dice"]))
    return bins


def size_breakdown(results_at: dict, arms: list[str], test: str, base: str = REAL) -> dict:
    """Per size bin of the test frames' polyps: the frames in it, each arm's mean Dice over them (mean over seeds,
    95 % CI) and its paired difference from ``base`` (real; per seed: the same frames, the same real training frames;
    ``base`` comes first in ``arms``). The seeds may be any pairing key (evaluations/curve_draws.py: subset draws)."""
    frames = {}
    table = {}
    for arm in arms:
        runs = results_at.get(arm, {})
        per_seed = {seed: _dice_by_size(record, test) for seed, record in runs.items()}
        table[arm] = {}
        for label in SIZE_BIN_LABELS:
            means = {seed: float(np.mean(bins[label])) for seed, bins in per_seed.items() if bins.get(label)}
            counts = [len(bins[label]) for bins in per_seed.values() if bins.get(label)]
            if counts:
                frames[label] = max(frames.get(label, 0), max(counts))
            entry = {"dice": _stats(means.values()), "per_seed": means}
            if arm != base:
                paired_with = table.get(base, {}).get(label, {}).get("per_seed", {})
                differences = [means[s] - paired_with[s] for s in sorted(set(means) & set(paired_with))]
                entry["difference"] = _stats(differences)
            table[arm][label] = entry
    return {"bins": [label for label in SIZE_BIN_LABELS if frames.get(label)], "frames": frames, "arms": table}


def verdicts(points: list[dict], arms: list[str], tests: list[str]) -> list[dict]:
    """One sentence per arm and test set, a clause per fraction: "+0.04 Dice at 90 frames (p = 0.01, …); no
    significant effect at 225 frames (…)"."""
    sentences = []
    for arm in arms:
        if arm == REAL:
            continue
        for test in tests:
            clauses = [_clause(point["differences"].get(arm, {}).get(test), point["subset_frames"]) for point in points]
            sentences.append({"arm": arm, "test": test,
                              "text": f"{arm} vs real on {test}: " + "; ".join(clauses) + "."})
    return sentences


def _arm_description(settings, arm: str):
    """What an arm is, for the report: the subset alone, its job file, the mix of arms, or the folders given."""
    if arm == REAL:
        return "the subset's real training frames alone"
    if arm in settings.arms:
        return str(settings.arms[arm])
    if arm in settings.mixes:
        return f"equal shares of the pools of {' and '.join(settings.mixes[arm])}"
    return {fraction_label(f): str(d) for f, d in settings.synthetic.items()}


def build(settings, data, runs, results: dict, seconds: float) -> dict:
    """report.json's contents from the runs finished so far."""
    tests = list(settings.tests)
    arms = settings.arm_names()
    points = []
    for fraction in sorted(settings.fractions):
        part = data.parts[fraction]
        at = results.get(fraction, {})
        series = list(dict.fromkeys([*arms, *(r.series for r in runs if r.fraction == fraction)]))
        point = {"fraction": fraction, "subset_frames": len(part.subset), "train_frames": len(part.train),
                 "val_frames": len(part.val), "arms": {}, "differences": {}}
        for name in series:
            point["arms"][name] = _arm_entry(at.get(name, {}), tests)
            if name != REAL:
                point["differences"][name] = {test: _difference(at, name, test) for test in tests}
        point["by_size"] = {test: size_breakdown(at, [REAL, *[n for n in series if n != REAL]], test)
                            for test in tests}
        point["unseen"] = _unseen_differences(settings, data, runs, part, at, series, tests)
        points.append(point)
    ablation = sorted({r.series for r in runs if r.ablation})
    return {
        "kind": "learning-curve",
        "train": {"folder": str(settings.train), "frames": len(data.real)},
        "subset_draw": settings.subset_draw,
        "tests": {name: {"folder": str(folder), "frames": len(data.tests[name][0])}
                  for name, folder in settings.tests.items()},
        "normals": ({"folder": str(settings.normals), "frames": len(data.normals[0])}
                    if data.normals is not None else None),
        "validation": (f"--val {settings.val}" if settings.val is not None else
                       f"held out of each subset: the {VAL_FRACTION:.0%} with the lowest sha256 of the file stem "
                       "(engine.dataset.splits.holdout, by rank)"),
        "arms": {arm: _arm_description(settings, arm) for arm in arms},
        "synthetic_ratio": settings.synthetic_ratio, "ablation_series": ablation,
        "arm_ratios": {arm: settings.ratio_of(arm) for arm in arms
                       if arm != REAL and settings.ratio_of(arm) != settings.synthetic_ratio},
        "trainer": settings.trainer_settings(),
        "points": points,
        "verdicts": verdicts(points, arms, tests),
        "notes": list(data.notes) + _unseen_notes(points),
        "runs_planned": len(runs), "runs_done": sum(len(s) for f in results.values() for s in f.values()),
        "minutes_this_session": round(seconds / 60.0, 2),
    }


# ------------------------------------------------------------------------------------------------ the plot
def learning_curve_png(report: dict, panel_width: int = 440, height: int = 340) -> bytes:
    """Test Dice against the number of real frames, one panel per test set, one line per arm (not the ablation),
    a band for the 95 % confidence interval of the mean over seeds."""
    tests = list(report["tests"])
    arms = list(report["arms"])
    colours = {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}
    legend_width = 130
    width = panel_width * len(tests) + legend_width
    image = Image.new("RGBA", (width, height), "white")
    font = ImageFont.load_default()
    points = report["points"]
    xs = [p["subset_frames"] for p in points]
    for index, test in enumerate(tests):
        values = []
        for p in points:
            for arm in arms:
                d = p["arms"].get(arm, {}).get("tests", {}).get(test, {}).get("dice", {})
                values += [v for v in ([d.get("mean")] + list(d.get("ci95") or [])) if v is not None]
        left, right, top, bottom = panel_width * index + 50, panel_width * (index + 1) - 14, 26, 34
        overlay = Image.new("RGBA", image.size, (255, 255, 255, 0))
        draw, bands = ImageDraw.Draw(image), ImageDraw.Draw(overlay)
        draw.rectangle([left, top, right, height - bottom], outline=(120, 120, 120))
        draw.text((left + 4, 6), f"test Dice on {test}", fill=(0, 0, 0), font=font)
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        if hi - lo < 0.02:
            lo, hi = lo - 0.01, hi + 0.01
        lo, hi = max(0.0, lo - 0.05 * (hi - lo)), min(1.0, hi + 0.05 * (hi - lo))
        x0, x1 = 0, max(xs) * 1.05 if xs else 1

        def xy(x, y):  # a band beyond the axis (a Dice interval below 0) is drawn to its edge
            y = min(max(y, lo), hi)
            return (left + (x - x0) / (x1 - x0) * (right - left), top + (hi - y) / (hi - lo) * (height - bottom - top))

        for frac in np.linspace(0, 1, 5):
            value = lo + frac * (hi - lo)
            draw.text((left - 44, xy(0, value)[1] - 6), f"{value:.3f}", fill=(60, 60, 60), font=font)
        for x in xs:
            draw.text((xy(x, lo)[0] - 8, height - bottom + 4), str(x), fill=(60, 60, 60), font=font)
        draw.text(((left + right) // 2 - 30, height - 14), "real frames", fill=(60, 60, 60), font=font)
        for arm in arms:
            colour = colours[arm]
            line, upper, lower = [], [], []
            for p in points:
                d = p["arms"].get(arm, {}).get("tests", {}).get(test, {}).get("dice", {})
                if d.get("mean") is None:
                    continue
                line.append(xy(p["subset_frames"], d["mean"]))
                ci = d.get("ci95") or [d["mean"], d["mean"]]
                upper.append(xy(p["subset_frames"], ci[1]))
                lower.append(xy(p["subset_frames"], ci[0]))
            if len(upper) >= 2:
                bands.polygon(upper + lower[::-1], fill=colour + (50,))
            for (ux, uy), (_, ly) in zip(upper, lower):
                bands.line([(ux, uy), (ux, ly)], fill=colour + (140,), width=1)
            image.alpha_composite(overlay)
            overlay = Image.new("RGBA", image.size, (255, 255, 255, 0))
            bands = ImageDraw.Draw(overlay)
            draw = ImageDraw.Draw(image)
            if len(line) >= 2:
                draw.line(line, fill=colour, width=2)
            for x, y in line:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    draw = ImageDraw.Draw(image)
    for row, arm in enumerate(arms):
        y = 30 + 16 * row
        draw.rectangle([width - legend_width + 8, y + 2, width - legend_width + 18, y + 10], fill=colours[arm])
        draw.text((width - legend_width + 24, y), arm, fill=colours[arm], font=font)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ the page
def _cell(entry: dict | None, digits: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    ci = entry.get("ci95")
    text = f"{entry['mean']:.{digits}f}"
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def p_text(value) -> str:
    """A p-value in a table cell: two significant digits, "–" when there is none."""
    return "–" if value is None else f"{value:.2g}"


def signed_cell(entry: dict | None) -> str:
    """A difference in a table cell: "+0.040 [-0.010, +0.090]" (mean, 95 % CI), "–" without one."""
    if not entry or entry.get("mean") is None:
        return "–"
    low, high = entry.get("ci95") or (None, None)
    return f"{entry['mean']:+.3f}" + (f" [{low:+.3f}, {high:+.3f}]" if low is not None else "")


def _difference_table(entries: list[tuple[str, str, dict | None]]) -> str:
    """Rows "arm − real" on a test set: Dice per seed, mean [95 % CI], paired t p, Wilcoxon p; "" without any."""
    e = html.escape
    rows = []
    for arm, test, diff in entries:
        if diff is None:
            continue
        d, frame = diff["dice"], diff["per_frame_dice"]
        rows.append(f"<tr><td>{e(arm)} − real</td><td>{e(test)}</td>"
                    f"<td>{', '.join(f'{v:+.3f}' for v in d['differences'])}</td><td>{_cell(d)}</td>"
                    f"<td>{p_text(d['p_value'])}</td>"
                    f"<td>{p_text(frame['p_value'])} ({frame['frames']} frames)</td></tr>")
    if not rows:
        return ""
    return ("<table><tr><th>difference</th><th>test set</th><th>Dice per seed</th><th>mean [95 % CI]</th>"
            "<th>paired t p</th><th>Wilcoxon per frame p</th></tr>" + "".join(rows) + "</table>")


def render_html(report: dict, plot: bytes) -> str:
    e = html.escape
    tests = list(report["tests"])
    trainer = report["trainer"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>PolypForge learning curve</title><style>",
             "body{font-family:sans-serif;margin:24px;max-width:1200px;color:#222}table{border-collapse:collapse;"
             "margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}"
             ".small{color:#666;font-size:90%}.verdict{font-size:110%}"
             ".warn{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px}",
             "</style></head><body><h1>How much does each arm add to my real frames? A learning curve</h1>",
             f"<img alt='learning curve' src='data:image/png;base64,{base64.b64encode(plot).decode()}'>",
             "<h2>Verdict</h2><ul>"]
    parts += [f"<li class='verdict'>{e(v['text'])}</li>" for v in report["verdicts"]]
    parts.append("</ul><p class='small'>Per fraction: the mean over seeds of the paired difference arm − real in test "
                 "Dice (each seed trains both on the same real frames with the same validation frames), its "
                 "t-based 95 % confidence interval and the paired t-test over seeds; the Wilcoxon test per test "
                 "frame is in the tables below.</p>")
    parts += [f"<p class='warn'>⚠ {e(note)}</p>" for note in report["notes"]]
    parts.append(f"<p>{report['runs_done']} of {report['runs_planned']} runs done. Real training frames: "
                 f"<code>{e(report['train']['folder'])}</code> ({report['train']['frames']}); validation: "
                 f"{e(report['validation'])}. Test sets: "
                 + ", ".join(f"{e(n)} <code>{e(t['folder'])}</code> ({t['frames']})" for n, t in report["tests"].items())
                 + " — none seen in training (leak check by sha256)."
                 + (f" Polyp-free frames: <code>{e(report['normals']['folder'])}</code> ({report['normals']['frames']})."
                    if report["normals"] else "") + "</p>")
    parts.append("<p>Arms: " + "; ".join(f"<b>{e(arm)}</b>: {e(json.dumps(what) if isinstance(what, dict) else what)}"
                                          for arm, what in report["arms"].items())
                 + f". Synthetic variants per real training frame: {report['synthetic_ratio']:g}"
                 + "".join(f"; {e(arm)}: {ratio:g}" for arm, ratio in report.get("arm_ratios", {}).items())
                 + ", drawn "
                 "deterministically; every variant made from the fraction's own training frames (checked).</p>")
    budget = trainer.get("stopping") or f"{trainer.get('epochs')} epochs"
    parts.append(f"<p>Downstream model: {e(trainer['description'])}; the same rule for every run: {e(str(budget))}; "
                 f"batches of {trainer.get('batch_size')} at {trainer.get('size')}².</p>")
    for point in report["points"]:
        drawn = f", subset draw {report['subset_draw']}" if report.get("subset_draw") else ""
        parts.append(f"<h2>{point['subset_frames']} real frames (fraction {point['fraction']:g}{drawn}: "
                     f"{point['train_frames']} trained on, {point['val_frames']} for validation)</h2>")
        head = "".join(f"<th>Dice on {e(t)}</th><th>AP50 on {e(t)}</th>" for t in tests)
        parts.append(f"<table><tr><th>arm</th><th>runs</th><th>synthetic frames</th>{head}"
                     "<th>polyp-free frames flagged</th><th>steps (best at)</th></tr>")
        for arm, entry in point["arms"].items():
            cells = "".join(f"<td>{_cell(entry['tests'][t]['dice'])}</td><td>{_cell(entry['tests'][t]['ap50'])}</td>"
                            for t in tests)
            steps = ", ".join(f"{s} ({b})" for s, b in zip(entry["steps"], entry["best_steps"]))
            parts.append(f"<tr><td>{e(arm)}</td><td>{entry['runs']}</td><td>{entry['synthetic_frames'] or 0}</td>"
                         f"{cells}<td>{_cell(entry['normals_false_positive_rate'], 2)}</td><td>{steps}</td></tr>")
        parts.append("</table>")
        parts.append(_difference_table([(arm, test, diff) for arm, by_test in point["differences"].items()
                                        for test, diff in by_test.items()]))
        unseen = [(arm, f"{test}: the {entry['unseen']} unseen ({entry['seen']} seen by "
                        f"{', '.join(entry['generators'])})", entry["difference"])
                  for arm, by_test in point.get("unseen", {}).items() for test, entry in by_test.items()]
        if any(diff is not None for _, _, diff in unseen):
            parts.append("<p>On the test frames the generator never trained on (the model that painted the arm's "
                         "frames trained on the others: its gain on those is an upper bound; matched by sha256 with "
                         "the model's training_frames.txt)</p>" + _difference_table(unseen))
        for test, sizes in point.get("by_size", {}).items():
            if not sizes["bins"]:
                continue
            head = "".join(f"<th>{e(label)} % ({sizes['frames'][label]} frames)</th>" for label in sizes["bins"])
            body = []
            for arm, cells in sizes["arms"].items():
                shown = []
                for label in sizes["bins"]:
                    entry = cells.get(label, {})
                    text = _cell(entry.get("dice"))
                    if arm != REAL and entry.get("difference", {}).get("mean") is not None:
                        text += f" <span class='small'>(Δ {_cell(entry['difference'])})</span>"
                    shown.append(f"<td>{text}</td>")
                body.append(f"<tr><td>{e(arm)}</td>{''.join(shown)}</tr>")
            parts.append(f"<p>Dice on {e(test)} by the size of the frame's polyps (share of the frame): mean over "
                         f"seeds [95 % CI], and the paired difference from real</p><table><tr><th>arm</th>{head}</tr>"
                         + "".join(body) + "</table>")
    if report["ablation_series"]:
        parts.append("<p class='small'>The rows named “arm ×r” are the ratio ablation: r synthetic variants per real "
                     "training frame instead of the default.</p>")
    parts.append("<p class='small'>Cells: mean over seeds [t-based 95 % confidence interval]. Dice per test frame at "
                 "its own resolution (p &gt; 0.5), averaged; AP50 of the predicted components' boxes (pycocotools). "
                 "Polyp-free frames flagged: the share whose frame polyp score (the peak of p averaged over a "
                 "window of 4 % of the shorter side) is above 0.5. Every run: results/&lt;fraction&gt;/; all "
                 "figures: report.json.</p></body></html>")
    return "\n".join(parts)


def write_curve_report(out: Path, settings, data, runs, results: dict, seconds: float) -> dict:
    report = build(settings, data, runs, results, seconds)
    plot = learning_curve_png(report)
    json_path = atomic_write_bytes(Path(out) / "report.json", (json.dumps(
        report, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
    html_path = atomic_write_bytes(Path(out) / "report.html", render_html(report, plot).encode("utf-8"))
    atomic_write_bytes(Path(out) / "learning_curve.png", plot)
    return {**report, "html": str(html_path), "json": str(json_path)}
