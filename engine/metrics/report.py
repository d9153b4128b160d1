"""The quality report: real vs synthetic features → FD, KID, t-SNE, memorisation check, per-source breakdown;
written as ``report.html`` (self-contained: images are data URIs), ``report.json`` (every figure) and
``tsne.png``, each atomically.

Memorisation check. For each synthetic image, its nearest real image by cosine distance of the features.
A PolypForge variant is its source frame outside the region, so its own source frame (same sha256 as the
manifest's ``source_sha256``) is left out of its search and its distance to it reported apart ("how much
the variant changed its frame"). The flag threshold is data-driven: τ = the ``copy_percentile``-th
percentile (default 5) of the real images' leave-one-out nearest-real distances. A synthetic image closer to
some real frame than 95 % of real frames are to their own closest neighbour is as close as the near-duplicates
(consecutive video frames) the real set already holds: a likely copy of a patient's frame. The threshold
adapts to the feature model and to how redundant the real set is; a fixed number would not carry over between
DINOv2 and Inception, or between a random and a trained model.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.dataset.manifest import manifest_groups
from engine.errors import InputError
from engine.fileio import atomic_write_bytes
from engine.metrics import stats
from engine.metrics.features import (
    DEFAULT_BATCH,
    ImageSet,
    compute_features,
    describe_model,
    dumps,
    list_images,
    load_feature_model,
    random_weights,
    sha256_of,
)

REPORT_HTML, REPORT_JSON, TSNE_PNG = "report.html", "report.json", "tsne.png"
COPY_PERCENTILE = 5.0
PAIRS_SHOWN = 12
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class ReportResult:
    html: Path
    json: Path
    data: dict


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _features_for(image_set: ImageSet, extractor, batch_size, stage, progress, cancelled) -> np.ndarray:
    total, done = len(image_set), 0
    if progress:
        progress(stage, 0, total)

    def step(n):
        nonlocal done
        done += n
        if progress:
            progress(stage, done, total)

    return compute_features(image_set.items, extractor, batch_size=batch_size, progress=step, cancelled=cancelled)


def _donor_sha(record: dict | None) -> str | None:
    """The sha256 of the frame a transplant variant's polyp was taken from; None for any other variant."""
    return ((record or {}).get("transplant") or {}).get("donor", {}).get("frame_sha256")


def _own_sources(real_set: ImageSet, synth_set: ImageSet) -> tuple[list[set[int]], list[int | None], list[set[int]]]:
    """Per synthetic image: the real indices that are its source frame (by sha256), the first of them, and the
    real indices that are its donor frame (a transplant's polyp comes from there: a copy by design)."""
    records = [item.record or {} for item in synth_set.items]
    wanted = {r.get("source_sha256") for r in records} | {_donor_sha(r) for r in records}
    by_sha: dict[str, list[int]] = {}
    if wanted - {None}:
        for index, item in enumerate(real_set.items):
            by_sha.setdefault(sha256_of(item.path), []).append(index)
    exclude, first, donors = [], [], []
    for record in records:
        own = by_sha.get(record.get("source_sha256"), [])
        exclude.append(set(own))
        first.append(own[0] if own else None)
        donors.append(set(by_sha.get(_donor_sha(record), [])))
    return exclude, first, donors


def _fd_kid(real: np.ndarray, synth: np.ndarray, subsets: int) -> dict:
    out: dict = {"n_real": int(real.shape[0]), "n_synthetic": int(synth.shape[0])}
    out["fd"] = stats.frechet_distance(real, synth) if min(real.shape[0], synth.shape[0]) >= 2 else None
    out["kid"] = stats.kid(real, synth, subsets=subsets) if min(real.shape[0], synth.shape[0]) >= 2 else None
    return out


def compute_report(real_dir, synthetic_dir, extractor, batch_size: int = DEFAULT_BATCH,
                   copy_percentile: float = COPY_PERCENTILE, kid_subsets: int = stats.KID_SUBSETS,
                   progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
                   tsne: bool = True, judge=None) -> tuple[dict, dict]:
    """All figures (a JSON-able dict) and the pictures ({name: PIL image}); writes nothing. With a `judge`
    (engine.judge.model.Judge) and a PolypForge output, also the detectability figures."""
    t0 = time.perf_counter()
    real_set = real_dir if isinstance(real_dir, ImageSet) else list_images(real_dir)
    synth_set = synthetic_dir if isinstance(synthetic_dir, ImageSet) else list_images(synthetic_dir)
    if len(real_set) < 2 or len(synth_set) < 2:
        raise InputError(f"need at least 2 images in each folder: {real_dir} has {len(real_set)}, "
                         f"{synthetic_dir} has {len(synth_set)}")
    real = _features_for(real_set, extractor, batch_size, "real features", progress, cancelled)
    synth = _features_for(synth_set, extractor, batch_size, "synthetic features", progress, cancelled)
    dim = int(real.shape[1])
    if progress:
        progress("statistics", 0, 2)
    data: dict = {
        "real": {"folder": str(real_set.root), "count": len(real_set), "notes": real_set.notes},
        "synthetic": {"folder": str(synth_set.root), "count": len(synth_set), "notes": synth_set.notes,
                      "polypforge_output": synth_set.polypforge},
        "features": {**describe_model(extractor), "dim": dim},
    }
    data["overall"] = _fd_kid(real, synth, kid_subsets)
    warnings = stats.sample_size_warnings(len(real_set), len(synth_set), dim)
    if random_weights(extractor):
        warnings.insert(0, f"feature model {data['features'].get('name')} has RANDOM weights: these numbers show "
                           "that the report runs; they say nothing about image quality")

    # memorisation
    exclude, own, donors = _own_sources(real_set, synth_set)
    nn_dist, nn_index = stats.nearest(synth, real, exclude=exclude)
    loo = stats.real_nn_distances(real)
    threshold = float(np.percentile(loo, copy_percentile))
    own_dist = [None if o is None else float(stats.nearest(synth[i:i + 1], real[o:o + 1])[0][0])
                for i, o in enumerate(own)]
    rows = []
    for i, item in enumerate(synth_set.items):
        j = int(nn_index[i])
        close = bool(j >= 0 and nn_dist[i] < threshold)
        # A transplant whose nearest real frame is its donor's frame copies that polyp on purpose.
        by_design = close and j in donors[i]
        rows.append({
            "synthetic": str(item.path.relative_to(synth_set.root)),
            "nearest_real": str(real_set.items[j].path.relative_to(real_set.root)) if j >= 0 else None,
            "distance": float(nn_dist[i]) if j >= 0 else None,
            "flagged": close and not by_design,
            "copy_by_design": by_design,
            "own_source": str(real_set.items[own[i]].path.relative_to(real_set.root)) if own[i] is not None else None,
            "distance_to_own_source": own_dist[i],
        })
    valid = nn_dist[np.isfinite(nn_dist)]
    data["memorisation"] = {
        "metric": "cosine distance ‖x/‖x‖ − y/‖y‖‖ between global features (0 = same direction, 2 = opposite)",
        "threshold": threshold,
        "threshold_rule": f"{copy_percentile:g}th percentile of the real images' leave-one-out nearest-real "
                          "distances",
        "copy_percentile": copy_percentile,
        "real_loo_nn": {"median": float(np.median(loo)), "min": float(loo.min()), "max": float(loo.max())},
        "synthetic_nn": {"median": float(np.median(valid)) if valid.size else None,
                         "min": float(valid.min()) if valid.size else None},
        "own_source_excluded": int(sum(1 for e in exclude if e)),
        "flagged": int(sum(r["flagged"] for r in rows)),
        "transplants": int(sum(1 for item in synth_set.items if _donor_sha(item.record))),
        "copies_by_design": int(sum(r["copy_by_design"] for r in rows)),
        "per_image": rows,
    }
    if data["memorisation"]["own_source_excluded"]:
        own_values = [d for d in own_dist if d is not None]
        data["memorisation"]["distance_to_own_source"] = {"median": float(np.median(own_values)),
                                                          "max": float(np.max(own_values))}

    if progress:
        progress("statistics", 1, 2)
    # per-source breakdown
    breakdown = []
    if synth_set.polypforge:
        for key, values in manifest_groups([item.record for item in synth_set.items]).items():
            for value, indices in sorted(values.items()):
                entry = {"by": key, "value": value, "count": len(indices)}
                if len(indices) >= 2:
                    entry.update(_fd_kid(real, synth[indices], max(10, kid_subsets // 2)))
                else:
                    entry.update({"fd": None, "kid": None})
                entry["median_nn_distance"] = float(np.median(nn_dist[indices]))
                entry["flagged"] = int(sum(rows[i]["flagged"] for i in indices))
                entry["warnings"] = stats.sample_size_warnings(len(real_set), len(indices), dim,
                                                               f"{key} = {value}")[1:] if len(indices) >= 50 else [
                    f"{key} = {value}: only {len(indices)} images: its FD/KID are noise"]
                breakdown.append(entry)
    data["breakdown"] = breakdown
    if judge is not None and synth_set.polypforge:
        from engine.judge.detectability import compute_detectability

        data["detectability"] = compute_detectability(synth_set, judge, progress=progress, cancelled=cancelled)
        if data["detectability"]["judge"].get("random_weights"):
            warnings.append(f"judge {judge.name} has RANDOM weights: its detectability figures mean nothing")

    if progress:
        progress("statistics", 2, 2)
    pictures = {}
    if tsne:
        if progress:
            progress("t-SNE", 0, 1)
        from engine.metrics.plots import scatter_png, tsne_embedding

        real_xy, synth_xy, info = tsne_embedding(real, synth)
        if progress:
            progress("t-SNE", 1, 1)
        data["tsne"] = {**info, "real": np.round(real_xy, 4).tolist(), "synthetic": np.round(synth_xy, 4).tolist()}
        pictures["tsne"] = scatter_png(real_xy, synth_xy, f"t-SNE of {data['features'].get('name')} features")
    data["warnings"] = warnings
    data["seconds"] = round(time.perf_counter() - t0, 2)
    if progress:
        progress("closest pairs", 0, 1)
    pictures["pairs"] = _pair_pictures(real_set, synth_set, rows)
    if progress:
        progress("closest pairs", 1, 1)
    return data, pictures


def _pair_pictures(real_set: ImageSet, synth_set: ImageSet, rows: list[dict]) -> list[tuple[dict, object]]:
    from engine.dataset.image_reader import read_frame
    from engine.metrics.plots import pair_png

    order = sorted((i for i, r in enumerate(rows) if r["distance"] is not None), key=lambda i: rows[i]["distance"])
    shown = []
    for i in order[:PAIRS_SHOWN]:
        row = rows[i]
        synth = read_frame(synth_set.root / row["synthetic"])
        real = read_frame(real_set.root / row["nearest_real"])
        caption = f"d = {row['distance']:.4f}{'  FLAGGED' if row['flagged'] else ''}"
        shown.append((row, pair_png(synth, real, caption, row["flagged"])))
    return shown


def _fmt(value, digits=4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def _kid_text(k) -> str:
    return "–" if not k else f"{_fmt(k['mean'])} ± {_fmt(k['std'])}"


def render_html(data: dict, pictures: dict) -> str:
    e = html.escape
    mem = data["memorisation"]
    overall = data["overall"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>PolypForge quality report</title><style>",
        ("body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}"
        ".warn{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px;margin:8px 0}"
        ".pairs img{margin:4px}.small{color:#666;font-size:90%}"),
        "</style></head><body><h1>PolypForge quality report</h1>",
        (f"<p>Real: <code>{e(data['real']['folder'])}</code> ({data['real']['count']} images) · Synthetic: "
        f"<code>{e(data['synthetic']['folder'])}</code> ({data['synthetic']['count']} images"
        f"{', a PolypForge output' if data['synthetic']['polypforge_output'] else ''}) · Features: "
        f"{e(str(data['features'].get('name')))} ({data['features']['dim']} dims"
        f"{', RANDOM weights' if data['features'].get('random_weights') else ''})</p>"),
    ]
    for warning in data["warnings"]:
        parts.append(f"<div class='warn'>⚠ {e(warning)}</div>")
    for note in data["real"]["notes"] + data["synthetic"]["notes"]:
        parts.append(f"<p class='small'>{e(note)}</p>")
    parts += [
        "<h2>Distribution distances</h2><table><tr><th>measure</th><th>value</th><th>what it is</th></tr>",
        (f"<tr><td>FD (Fréchet distance)</td><td>{_fmt(overall['fd'])}</td><td>‖μ<sub>r</sub>−μ<sub>s</sub>‖² + "
        "Tr(Σ<sub>r</sub>+Σ<sub>s</sub>−2(Σ<sub>r</sub>Σ<sub>s</sub>)<sup>½</sup>); 0 = same Gaussian; biased "
        "upward at small N</td></tr>"),
        (f"<tr><td>KID</td><td>{_kid_text(overall['kid'])}</td><td>unbiased MMD², cubic polynomial kernel, mean ± "
        f"std over {overall['kid']['subsets']} subsets of {overall['kid']['subset_size']}; ≈ 0 = same "
        "distribution</td></tr>"),
        (f"<tr><td>sample sizes</td><td>{overall['n_real']} real, {overall['n_synthetic']} synthetic</td>"
        "<td></td></tr></table>"),
    ]
    if "tsne" in pictures:
        t = data["tsne"]
        parts.append(f"<h2>t-SNE</h2><p class='small'>perplexity {t['perplexity']:.1f}, standardised features, "
                     f"seed {t['seed']}. Synthetic points mixed among real ones = similar features; a separate "
                     "island = a distinguishable set.</p>"
                     f"<img alt='t-SNE scatter' src='{_data_uri(_png_bytes(pictures['tsne']))}'>")
    parts += [
        "<h2>Memorisation check</h2>",
        (f"<p>Nearest real image of each synthetic image by {e(mem['metric'])}. Flag threshold τ = "
        f"{_fmt(mem['threshold'])} ({e(mem['threshold_rule'])}: a synthetic image this close to a real frame is "
        "as close as the near-duplicates the real set already holds). Real leave-one-out nearest distance: "
        f"median {_fmt(mem['real_loo_nn']['median'])}, min {_fmt(mem['real_loo_nn']['min'])}. Synthetic → "
        f"nearest real: median {_fmt(mem['synthetic_nn']['median'])}, min {_fmt(mem['synthetic_nn']['min'])}. "
        f"<b>{mem['flagged']} of {len(mem['per_image'])} flagged.</b></p>"),
    ]
    if mem.get("transplants"):
        parts.append(f"<p class='small'>{mem['transplants']} variants are transplants: each carries a real polyp "
                     "from one of the curator's own frames, a copy of that donor by design. "
                     f"{mem['copies_by_design']} of them are nearest to their donor's frame within τ; they are "
                     "counted here, not flagged.</p>")
    if mem["own_source_excluded"]:
        own = mem["distance_to_own_source"]
        parts.append(f"<p class='small'>{mem['own_source_excluded']} variants have their own source frame in the "
                     "real folder: it is left out of their search (a variant is its frame outside the region). "
                     f"Distance to own source: median {_fmt(own['median'])}, max {_fmt(own['max'])}.</p>")
    parts.append("<p class='small'>Closest pairs: synthetic (left) | nearest real (right); red = flagged.</p>"
                 "<div class='pairs'>")
    for row, image in pictures.get("pairs", []):
        parts.append(f"<img title='{e(row['synthetic'])} ↔ {e(str(row['nearest_real']))}' "
                     f"src='{_data_uri(_png_bytes(image))}'>")
    parts.append("</div>")
    if data["breakdown"]:
        parts.append("<h2>Per source</h2><table><tr><th>by</th><th>value</th><th>n</th><th>FD</th><th>KID</th>"
                     "<th>median nearest-real</th><th>flagged</th><th>note</th></tr>")
        for b in data["breakdown"]:
            parts.append(f"<tr><td>{e(b['by'])}</td><td>{e(b['value'])}</td><td>{b['count']}</td>"
                         f"<td>{_fmt(b['fd'])}</td><td>{_kid_text(b['kid'])}</td>"
                         f"<td>{_fmt(b['median_nn_distance'])}</td><td>{b['flagged']}</td>"
                         f"<td class='small'>{e('; '.join(b['warnings']))}</td></tr>")
        parts.append("</table>")
    if data.get("detectability"):
        parts.append(_detectability_html(data["detectability"]))
    parts.append(f"<p class='small'>All figures: report.json. {data['seconds']} s.</p></body></html>")
    return "\n".join(parts)


def _rate(value) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _detectability_html(det: dict) -> str:
    e = html.escape
    ceiling = det["ceiling"]
    rules = det["rules"]
    parts = [
        "<h2>Detectability (the polyp judge)</h2>",
        (f"<p>Judge: {e(str(det['judge'].get('name')))} ({e(str(det['judge'].get('bundle_id', ''))[:12])}), a "
         "segmenter trained on real frames; an evaluation tool, not a diagnostic device. Add: "
         f"{e(rules['add'])}. Remove: {e(rules['remove'])}. Before: {e(rules['before'])}.</p>"),
        (f"<p><b>Ceiling</b>: on the {ceiling['source_frames_with_polyp']} real source frames with a polyp the "
         f"judge finds {_rate(ceiling['found_rate'])} of them (mean IoU {_fmt(ceiling['mean_iou'])}, confidence "
         f"{_fmt(ceiling['mean_confidence'])}).</p>"),
        "<table><tr><th>by</th><th>value</th><th>n</th><th>found</th><th>found before (source)</th>"
        "<th>mean score</th><th>mean IoU</th><th>mean confidence</th></tr>",
    ]
    overall = det["overall"]
    groups = [{"by": "all", "value": "", **overall}] + det["groups"]
    for g in groups:
        parts.append(f"<tr><td>{e(g['by'])}</td><td>{e(str(g['value']))}</td><td>{g['count']}</td>"
                     f"<td>{_rate(g['found_rate'])}</td><td>{_rate(g['before_found_rate'])}</td>"
                     f"<td>{_fmt(g['mean_score'])}</td><td>{_fmt(g['mean_iou'])}</td>"
                     f"<td>{_fmt(g['mean_confidence'])}</td></tr>")
    parts.append("</table>")
    sizes = [b for b in det.get("by_region_size", []) if b["variants"] or b["real_polyps"]]
    if sizes:
        parts.append("<p>By region size (share of the frame; add mode), next to the judge on the real source "
                     "polyps of the same size — a whole-frame judge finds small polyps less often:</p>"
                     "<table><tr><th>region size</th><th>variants</th><th>found</th><th>real polyps</th>"
                     "<th>real found</th></tr>")
        for b in sizes:
            parts.append(f"<tr><td>{b['area_from']:.0%}–{b['area_to']:.0%}</td><td>{b['variants']}</td>"
                         f"<td>{_rate(b['found_rate'])}</td><td>{b['real_polyps']}</td>"
                         f"<td>{_rate(b['real_found_rate'])}</td></tr>")
        parts.append("</table>")
    for note in det["notes"]:
        parts.append(f"<p class='small'>{e(note)}</p>")
    return "\n".join(parts)


def write_report(out_dir, data: dict, pictures: dict) -> ReportResult:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the report folder ({exc.strerror})") from None
    if "tsne" in pictures:
        atomic_write_bytes(out / TSNE_PNG, _png_bytes(pictures["tsne"]))
    json_path = atomic_write_bytes(out / REPORT_JSON, dumps(data))
    html_path = atomic_write_bytes(out / REPORT_HTML, render_html(data, pictures).encode("utf-8"))
    return ReportResult(html_path, json_path, data)


def run_report(real_dir, synthetic_dir, out_dir, features: str | os.PathLike[str] | None = None, extractor=None,
               batch_size: int = DEFAULT_BATCH, copy_percentile: float = COPY_PERCENTILE,
               progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
               log: Callable[[str], None] | None = None, provider: str = "auto",
               judge: str | os.PathLike[str] | None = "auto") -> ReportResult:
    """The whole report: load the feature model (unless `extractor` is given), compute, write. The folders are
    checked before the feature model loads, so a wrong path fails at once. `judge`: a segmenter bundle for the
    detectability figures; "auto" takes exported_models/polyp-judge when it is there, None skips them."""
    real_dir, synthetic_dir = list_images(real_dir), list_images(synthetic_dir)
    if extractor is None:
        extractor = load_feature_model(features, provider=provider, log=log)
    judge_model = load_judge(judge, provider=provider, log=log) if synthetic_dir.polypforge else None
    data, pictures = compute_report(real_dir, synthetic_dir, extractor, batch_size=batch_size,
                                    copy_percentile=copy_percentile, progress=progress, cancelled=cancelled,
                                    judge=judge_model)
    return write_report(out_dir, data, pictures)


def load_judge(judge: str | os.PathLike[str] | None, provider: str = "auto", log: Callable[[str], None] | None = None):
    """The judge for detectability: None → none; "auto" → the shipped polyp-judge when present; else a bundle."""
    from engine.errors import BundleError
    from engine.judge.model import Judge, default_judge_bundle

    if judge is None:
        return None
    if str(judge) == "auto":
        try:
            path = default_judge_bundle()
        except BundleError:
            if log is not None:
                log("detectability: no polyp-judge bundle found (train one with `main.py train-judge`); left out")
            return None
        if not path.exists():
            return None
        return Judge.from_bundle(path, provider=provider)
    return Judge.from_bundle(judge, provider=provider)
