"""``evaluate``'s figures and pages: runs → mean ± std per arm, paired differences, significance, learning
curves; report.json and a self-contained report.html (pictures as data URIs), each written atomically.

Significance, kept simple and said in words:
- across seeds, a paired t-test of the per-seed differences (synthetic − real); with 3 seeds only a large,
  consistent effect reaches p < 0.05;
- across test frames, a Wilcoxon signed-rank test of each frame's Dice (averaged over seeds) between the arms:
  more power, but it treats the frames, not the training runs, as the sample.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.fileio import atomic_write_bytes

METRICS = ("dice", "iou", "ap50", "ap")
ARM_COLOURS = {"real": (33, 102, 172), "real+synthetic": (214, 96, 77)}


def mean_std(values) -> dict:
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def confidence_interval(values, level: float = 0.95) -> list[float] | None:
    """The t-based ``level`` confidence interval of the mean of ``values`` (mean ± t·s/√n); None below 2 values."""
    from scipy import stats as scipy_stats

    values = [float(v) for v in values if v is not None]
    if len(values) < 2:
        return None
    mean, half = float(np.mean(values)), 0.0
    spread = float(np.std(values, ddof=1))
    if spread > 0:
        half = float(scipy_stats.t.ppf(0.5 + level / 2, len(values) - 1)) * spread / np.sqrt(len(values))
    return [mean - half, mean + half]


def paired(results: dict, arms: tuple[str, str]) -> dict:
    """Per metric: the per-seed differences arms[1] − arms[0], their mean ± std, the t-based 95 % confidence
    interval of their mean and a paired t-test."""
    from scipy import stats as scipy_stats

    base, other = arms
    seeds = sorted(set(results.get(base, {})) & set(results.get(other, {})))
    out = {"seeds": seeds}
    for metric in METRICS:
        pairs = [(results[base][s]["summary"][metric], results[other][s]["summary"][metric]) for s in seeds]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        diffs = [b - a for a, b in pairs]
        entry = {"differences": diffs, **mean_std(diffs), "ci95": confidence_interval(diffs), "p_value": None}
        if len(diffs) >= 2 and np.std(diffs) > 0:
            entry["p_value"] = float(scipy_stats.ttest_rel([b for _, b in pairs], [a for a, _ in pairs]).pvalue)
        out[metric] = entry
    # per frame: Dice averaged over seeds, paired between the arms
    frames = None
    per_arm = {}
    for arm in arms:
        table = {}
        for seed in seeds:
            for row in results[arm][seed]["frames"]:
                table.setdefault(row["frame"], []).append(row["dice"])
        per_arm[arm] = {k: float(np.mean(v)) for k, v in table.items()}
        frames = set(table) if frames is None else frames & set(table)
    frames = sorted(frames or [])
    a = np.array([per_arm[base][f] for f in frames])
    b = np.array([per_arm[other][f] for f in frames])
    frame_test = {"frames": len(frames), "mean_difference": float((b - a).mean()) if len(frames) else None,
                  "p_value": None}
    if len(frames) >= 2 and np.any(b - a != 0):
        frame_test["p_value"] = float(scipy_stats.wilcoxon(b, a).pvalue)
    out["per_frame_dice"] = frame_test
    out["statement"] = statement(out, arms)
    return out


def statement(diff: dict, arms: tuple[str, str]) -> str:
    d = diff["dice"]
    if d["mean"] is None:
        return "no paired runs yet"
    direction = "higher" if d["mean"] > 0 else "lower"
    text = (f"Dice with {arms[1]} is {abs(d['mean']):.4f} {direction} than with {arms[0]} "
            f"(mean over {d['n']} seed(s), std {d['std']:.4f}")
    text += f", paired t-test p = {d['p_value']:.3g})" if d["p_value"] is not None else ")"
    frame = diff["per_frame_dice"]
    if frame["p_value"] is not None:
        text += f"; per test frame (Wilcoxon, {frame['frames']} frames) p = {frame['p_value']:.3g}"
    significant = [p for p in (d["p_value"], frame["p_value"]) if p is not None and p < 0.05]
    text += (". The difference is significant at the 5 % level." if significant and d["p_value"] is not None
             and d["p_value"] < 0.05 else
             ". Not significant across seeds at the 5 % level" + (" (significant across frames only)"
                                                                 if significant else "") + ".")
    return text


def summarise_runs(results: dict, arms: tuple[str, ...]) -> dict:
    table = {}
    for arm in arms:
        runs = results.get(arm, {})
        table[arm] = {metric: mean_std(r["summary"][metric] for r in runs.values()) for metric in METRICS}
        table[arm]["runs"] = len(runs)
    return table


def curves_png(results: dict, metric: str = "val_dice", width: int = 720, height: int = 320) -> bytes:
    """Validation metric against step for every run, one colour per arm."""
    series = [(arm, seed, [(r["step"], r[metric]) for r in run["curve"] if metric in r])
              for arm, runs in results.items() for seed, run in runs.items()]
    series = [s for s in series if len(s[2]) >= 1]
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 50, 150, 20, 30
    draw.rectangle([left, top, width - right, height - bottom], outline=(120, 120, 120))
    if series:
        steps = [p[0] for _, _, pts in series for p in pts]
        values = [p[1] for _, _, pts in series for p in pts]
        x0, x1 = min(steps), max(max(steps), min(steps) + 1)
        lo, hi = min(values), max(values)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.05, hi + 0.05

        def xy(step, value):
            return (left + (step - x0) / (x1 - x0) * (width - left - right),
                    top + (hi - value) / (hi - lo) * (height - top - bottom))

        for frac in np.linspace(0, 1, 5):
            value = lo + frac * (hi - lo)
            draw.text((4, xy(x0, value)[1] - 6), f"{value:.3f}", fill=(60, 60, 60), font=font)
            step = x0 + frac * (x1 - x0)
            draw.text((xy(step, lo)[0] - 10, height - bottom + 6), f"{int(step)}", fill=(60, 60, 60), font=font)
        for row, (arm, seed, points) in enumerate(series):
            colour = ARM_COLOURS.get(arm, (90, 90, 90))
            coords = [xy(s, v) for s, v in points]
            if len(coords) >= 2:
                draw.line(coords, fill=colour, width=2)
            for x, y in coords:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            draw.text((width - right + 8, top + 14 * row), f"{arm} seed {seed}", fill=colour, font=font)
    draw.text((left + 6, top + 4), f"{metric} (held-out real training frames) vs step", fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _fmt(entry) -> str:
    if entry is None or entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def _v(value, digits=4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_html(data: dict, curves: bytes) -> str:
    e = html.escape
    arms = data["arms"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>PolypForge evaluation</title><style>",
             "body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}table{border-collapse:collapse;"
             "margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}"
             ".small{color:#666;font-size:90%}.warn{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px}",
             "</style></head><body><h1>Does the synthetic set help? Augmentation-based evaluation</h1>",
             f"<p>Train: <code>{e(data['train']['folder'])}</code> ({data['train']['frames']} real frames, "
             f"{data['train']['val_frames']} of them held out for model selection) · Synthetic: "
             f"<code>{e(str(data['synthetic']['folder']))}</code> ({data['synthetic']['used']} variants used of "
             f"{data['synthetic']['frames']}) · Test: <code>{e(data['test']['folder'])}</code> "
             f"({data['test']['frames']} real frames, none seen in training: leak check by sha256 passed)</p>",
             f"<p>Downstream model: {e(data['trainer']['description'])}; the same budget for every run "
             f"({data['trainer']['steps']} steps of {data['trainer']['batch_size']} frames at "
             f"{data['trainer']['size']}²), seeds {', '.join(str(s) for s in data['seeds'])}.</p>"]
    for warning in data.get("warnings", []):
        parts.append(f"<div class='warn'>⚠ {e(warning)}</div>")
    parts.append("<h2>Mean ± std over seeds</h2><table><tr><th>arm</th><th>runs</th><th>Dice</th><th>IoU</th>"
                 "<th>AP50</th><th>AP@[.5:.95]</th></tr>")
    for arm in arms:
        row = data["summary"][arm]
        parts.append(f"<tr><td>{e(arm)}</td><td>{row['runs']}</td>" + "".join(
            f"<td>{_fmt(row[m])}</td>" for m in METRICS) + "</tr>")
    parts.append("</table>")
    diff = data.get("difference")
    if diff:
        parts.append(f"<h2>Paired difference ({e(arms[1])} − {e(arms[0])})</h2><table><tr><th>metric</th>"
                     "<th>per seed</th><th>mean ± std</th><th>paired t-test p</th></tr>")
        for metric in METRICS:
            d = diff[metric]
            parts.append(f"<tr><td>{metric}</td><td>{', '.join(f'{v:+.4f}' for v in d['differences'])}</td>"
                         f"<td>{_fmt(d)}</td><td>{_v(d['p_value'], 3)}</td></tr>")
        parts.append(f"</table><p><b>{e(diff['statement'])}</b></p>")
    unseen = data.get("difference_unseen")
    if unseen:
        d = unseen["dice"]
        parts.append(f"<p>On the {data['generator_seen']['unseen']} test frames the generator never trained on: Dice "
                     f"{', '.join(f'{v:+.4f}' for v in d['differences'])} per seed, {_fmt(d)}, paired t-test p = "
                     f"{_v(d['p_value'], 3)}. {e(unseen['statement'])}</p>")
    parts.append(f"<h2>Learning curves ({e(data.get('trainer', {}).get('curve_metric', 'val_dice'))} on the held-out "
                 "real frames)</h2>"
                 f"<img alt='learning curves' src='data:image/png;base64,{base64.b64encode(curves).decode()}'>")
    parts.append("<h2>Runs</h2><table><tr><th>arm</th><th>seed</th><th>Dice</th><th>IoU</th><th>AP50</th>"
                 "<th>AP</th><th>steps kept</th><th>minutes</th></tr>")
    for arm in arms:
        for seed, run in sorted(data["runs"].get(arm, {}).items()):
            s = run["summary"]
            parts.append(f"<tr><td>{e(arm)}</td><td>{seed}</td><td>{_v(s['dice'])}</td><td>{_v(s['iou'])}</td>"
                         f"<td>{_v(s['ap50'])}</td><td>{_v(s['ap'])}</td><td>{run.get('best_step', '–')}</td>"
                         f"<td>{run.get('train_minutes', '–')}</td></tr>")
    threshold = data.get("trainer", {}).get("threshold", 0.5)
    parts.append(f"</table><p class='small'>Dice and IoU: per test frame at its own resolution (p &gt; {threshold}), "
                 "averaged. AP: COCO bbox AP (pycocotools) of the predicted mask components' boxes, scored by "
                 "their mean probability, against the truth masks' component boxes. All figures: report.json."
                 "</p></body></html>")
    return "\n".join(parts)


def write_evaluation_report(out: Path, data: dict) -> tuple[Path, Path]:
    curves = curves_png(data["runs"], metric=data.get("trainer", {}).get("curve_metric", "val_dice"))
    json_path = atomic_write_bytes(out / "report.json",
                                   (json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode())
    html_path = atomic_write_bytes(out / "report.html", render_html(data, curves).encode("utf-8"))
    atomic_write_bytes(out / "learning_curves.png", curves)
    return html_path, json_path
