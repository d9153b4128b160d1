"""Procedural, seeded colonoscopy-like frames and polyp masks.

PolypForge may not ship real patient frames, so its demo and tests run on
frames generated here.  The generator only needs numpy and Pillow and is
fully deterministic: the same ``seed`` and arguments always give the same
bytes (on a given numpy/Pillow build).

A frame is built as a small "rendering" of a lit tube:

* a dark lumen somewhere off-centre, with illumination growing towards the
  camera-near wall, and a vignette from the endoscope optics;
* haustral folds as warped, partial rings around the lumen, each with a lit
  ridge and a sharp dark crease;
* mucosa albedo with low-frequency colour drift and a thin red vessel net;
* per-channel tone curves so bright areas turn pale/peach and dark ones
  brown-red, as in white-light endoscopy;
* small specular highlights on the lit wall;
* optional polyps: irregular, ellipse-like domes, shaded by a light at the
  camera, redder or paler than the wall, with a pit texture, a soft rim,
  a contact shadow and specular glints;
* mild optical softness, sensor noise, and the black rounded-corner border
  of an endoscope video frame.

This module composes the scene and writes sample sets; the polyps are polyps.py's, the noise and
geometry primitives primitives.py's.

Public API::

    frame, masks = generate_frame(seed, width=320, height=256, polyps=1)
    paths = generate_sample_set(out_dir, count=6, seed=0, width=320,
                                height=256, with_polyps_every=2)
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from engine.samples.polyps import place_polyps, render_polyp
from engine.samples.primitives import (
    border_sdf,
    fbm,
    noise,
    pixel_grid,
    pixel_window,
    smoothstep,
)

__all__ = ["generate_frame", "generate_sample_set"]

_MIN_SIDE = 32
_MAX_SIDE = 8192


# --------------------------------------------------------------------------
# main generator
# --------------------------------------------------------------------------

def generate_frame(seed: int, width: int = 320, height: int = 256,
                   polyps: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """Generate one synthetic white-light colonoscopy frame.

    Returns ``(frame, masks)``: ``frame`` is uint8 (height, width, 3) RGB and
    ``masks`` is a list with one bool (height, width) mask per polyp
    (empty for ``polyps=0``).  Polyps lie fully inside the visible
    (non-border) area and do not overlap each other.  Deterministic in all
    arguments.
    """
    width, height, polyps = int(width), int(height), int(polyps)
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise ValueError(f"width/height must be in [{_MIN_SIDE}, {_MAX_SIDE}]")
    if polyps < 0:
        raise ValueError("polyps must be >= 0")
    seed = int(seed)
    # separate, stable streams so changing one stage does not shift others
    # (SeedSequence needs non-negative entries: encode the sign separately)
    ss = np.random.SeedSequence([abs(seed), int(seed < 0), width, height, 0x501F])
    r_scene, r_tex, r_spec, r_poly, r_noise = (
        np.random.default_rng(s) for s in ss.spawn(5))

    h, w = height, width
    s = float(min(h, w))
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5

    # ---- endoscope border -------------------------------------------------
    inset = r_scene.uniform(0.008, 0.03) * s
    corner = r_scene.uniform(0.10, 0.22) * s
    sdf = border_sdf(h, w, inset, corner)
    visible_a = smoothstep(0.8, -0.8, sdf)  # anti-aliased edge

    # ---- geometry: lumen + warped radial coordinate -------------------------
    ang = r_scene.uniform(0, 2 * math.pi)
    off = r_scene.uniform(0.12, 0.42)
    lx = w / 2.0 + math.cos(ang) * off * w
    ly = h / 2.0 + math.sin(ang) * off * h
    lumen_size = r_scene.uniform(0.07, 0.15) * s
    warp_amp = 0.06 * s
    wx = noise(r_scene, h, w, 3.0) * warp_amp
    wy = noise(r_scene, h, w, 3.0) * warp_amp
    dx = xs - lx + wx
    dy = (ys - ly + wy) * r_scene.uniform(1.0, 1.35)
    r = np.sqrt(dx * dx + dy * dy) + 1e-3
    theta = np.arctan2(dy, dx)
    rn = r / lumen_size  # 1 ~ lumen rim

    # ---- illumination -----------------------------------------------------
    far = np.hypot(max(lx, w - lx), max(ly, h - ly)) / lumen_size
    t = np.clip(np.log(rn) / math.log(max(far, 2.0)), 0.0, 1.2)
    E = 0.16 + 0.98 * t ** 0.9
    E *= 1.0 - 0.9 * smoothstep(2.2, 0.0, rn) ** 1.5  # dark lumen hole
    # vignette from the optics
    vx = (xs - w / 2.0) / (w / 2.0)
    vy = (ys - h / 2.0) / (h / 2.0)
    E *= 1.0 - 0.28 * np.clip(vx * vx + vy * vy, 0.0, 2.0) ** 1.3

    # ---- haustral folds ---------------------------------------------------
    fold_freq = r_scene.uniform(1.7, 2.6)
    fold_phase = r_scene.uniform(0, 1)
    ang_noise = np.zeros_like(theta)
    for k in (1, 2, 3):
        ang_noise += r_scene.uniform(-0.3, 0.3) / k * np.cos(
            k * theta + r_scene.uniform(0, 2 * math.pi))
    u = np.log(rn + 0.3) * fold_freq + fold_phase + ang_noise
    u += 0.06 * noise(r_scene, h, w, 6.0)
    f = u - np.floor(u)
    # f increases outwards; f=0 is a fold crest: bright, facing the camera.
    # Outwards of it the surface turns away and darkens; the band just
    # inside the next crest is its shadow, ending in a sharp occluding edge.
    edge_soft = r_scene.uniform(0.03, 0.08)
    crest = 1.0 + 0.10 * smoothstep(0.0, 0.06, f) * smoothstep(0.35, 0.06, f)
    shade = 1.0 - 0.5 * np.power(smoothstep(0.62, 1.0 - edge_soft * 0.5, f), 2.0)
    ridge = crest * shade
    ridge = ridge + (1.0 - ridge) * smoothstep(1.0 - edge_soft, 1.0, f)
    strength = np.clip(0.45 + 0.7 * noise(r_scene, h, w, 2.5), 0.0, 1.0)
    strength *= smoothstep(0.9, 2.2, rn) * r_scene.uniform(0.6, 0.9)
    fold = 1.0 + strength * (ridge - 1.0)
    E *= fold
    # fine granular relief of the mucosa
    E *= 1.0 + 0.015 * fbm(r_scene, h, w, 0.12 * s, 2)

    # ---- mucosa albedo ----------------------------------------------------
    tint = fbm(r_tex, h, w, 4.0, 3)
    fine = fbm(r_tex, h, w, 24.0, 2)
    # vessels: thin ridges of band-limited noise
    vcells = 10.0 * max(1.0, s / 256.0) ** 0.5
    v1 = 1.0 - np.abs(fbm(r_tex, h, w, vcells, 2, 0.45))
    v2 = 1.0 - np.abs(fbm(r_tex, h, w, vcells * 2.2, 1))
    vessels = 0.6 * smoothstep(0.95, 0.997, v1) + 0.35 * smoothstep(0.96, 0.997, v2)
    vessels *= np.clip(0.4 + 0.6 * noise(r_tex, h, w, 3.0), 0.0, 1.0)
    vessels *= r_tex.uniform(0.15, 0.7)
    hue = r_tex.uniform(-1, 1)
    alb_r = 1.0 + 0.025 * tint + 0.02 * fine
    alb_g = 1.0 + 0.04 * tint + 0.03 * fine + 0.05 * hue - 0.40 * vessels
    alb_b = 1.0 + 0.05 * tint + 0.03 * fine + 0.07 * hue - 0.40 * vessels
    alb = [alb_r, alb_g, alb_b]

    # ---- polyps ------------------------------------------------------------
    masks: list[np.ndarray] = []
    spec_extra = np.zeros((h, w), np.float32)
    if polyps > 0:
        margin = max(3.0, 0.025 * s)
        blobs = place_polyps(r_poly, polyps, h, w, sdf, margin, E, 0.6)
        for blob in blobs:
            spec_extra += render_polyp(r_poly, blob, h, w, E, alb, masks)

    # ---- tone mapping: illumination -> RGB ------------------------------------
    exposure = r_scene.uniform(0.98, 1.12)
    Ex = np.clip(E * exposure, 0.0, None)
    # red follows the light; green/blue are a fraction of red that grows in
    # the brightest areas (they look pale/peach, darker areas orange-brown)
    red = 250.0 * Ex * alb[0]
    pale = smoothstep(0.72, 1.08, Ex)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = red
    img[..., 1] = red * (0.47 + 0.22 * pale) * alb[1]
    img[..., 2] = red * (0.30 + 0.22 * pale) * alb[2]
    # soft shoulder instead of hard clipping in the brightest areas
    hi = np.clip(img - 225.0, 0.0, None)
    img = np.minimum(img, 225.0) + 30.0 * (1.0 - np.exp(-hi / 30.0))

    # ---- specular highlights ------------------------------------------------
    spec = _speculars(r_spec, h, w, E, rn, f, strength) + spec_extra
    spec = np.clip(spec, 0.0, 1.5)
    img = img + (np.array([255.0, 252.0, 248.0], np.float32) - img) * np.clip(
        spec, 0.0, 1.0)[..., None]

    # ---- optics softness, noise, border ---------------------------------------
    img8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    blur = 0.55 * max(1.0, s / 320.0) ** 0.7
    img8 = np.asarray(Image.fromarray(img8, "RGB").filter(
        ImageFilter.GaussianBlur(blur)), dtype=np.float32)
    img8 += r_noise.normal(0.0, 1.6, size=(h, w, 1)).astype(np.float32)
    img8 *= visible_a[..., None]
    frame = np.clip(img8 + 0.5, 0, 255).astype(np.uint8)
    return frame, masks

def _speculars(rng, h, w, E, rn, f, strength) -> np.ndarray:
    """Small white wet reflections, mostly on lit fold ridges."""
    s = min(h, w)
    out = np.zeros((h, w), np.float32)
    n_clusters = int(rng.integers(3, 8))
    n_total = int(rng.integers(10, 28) * max(1.0, (h * w) / (320 * 256)) ** 0.35)
    # candidate positions: bright wall, near the lit side of a fold
    weight = np.clip(E - 0.55, 0.0, None) ** 2 * (0.3 + smoothstep(0.05, 0.3, f) *
                                                  smoothstep(0.6, 0.4, f) * strength)
    weight = weight.ravel().astype(np.float64)
    tot = weight.sum()
    if tot <= 0:
        return out
    cdf = np.cumsum(weight)
    centres = np.searchsorted(cdf, rng.uniform(0, tot, size=n_clusters))
    for i in range(n_total):
        c = int(centres[i % n_clusters])
        cy, cx = divmod(c, w)
        spread = rng.uniform(0.005, 0.05) * s
        px = cx + rng.normal(0, spread)
        py = cy + rng.normal(0, spread)
        rad = s * rng.uniform(0.002, 0.011) * (2.2 if rng.uniform() < 0.12 else 1.0)
        rad = max(0.6, rad)
        elong = rng.uniform(1.0, 2.6)
        rot = rng.uniform(0, math.pi)
        R = rad * elong * 2.5 + 2
        x0, y0, x1, y1 = pixel_window((px - R, py - R, px + R, py + R), h, w)
        if x0 >= x1 or y0 >= y1:
            continue
        gx, gy = pixel_grid(x0, y0, x1, y1)
        ddx, ddy = gx - px, gy - py
        cr, sr = math.cos(rot), math.sin(rot)
        uu = (cr * ddx + sr * ddy) / (rad * elong)
        vv = (-sr * ddx + cr * ddy) / rad
        d2 = uu * uu + vv * vv
        spot = np.clip(1.6 * np.exp(-d2 * d2 * 0.8) - 0.1, 0.0, 1.0)
        out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], spot)
    # many tiny single-pixel-ish sparkles of the wet surface
    n_tiny = int(rng.integers(20, 70) * max(1.0, (h * w) / (320 * 256)) ** 0.5)
    idx = np.searchsorted(cdf, rng.uniform(0, tot, size=n_tiny))
    ty, tx = np.divmod(idx, w)
    tx = np.clip(tx + rng.integers(-int(0.08 * s), int(0.08 * s) + 1, size=n_tiny), 0, w - 1)
    ty = np.clip(ty + rng.integers(-int(0.08 * s), int(0.08 * s) + 1, size=n_tiny), 0, h - 1)
    val = rng.uniform(0.35, 0.9, size=n_tiny).astype(np.float32)
    np.maximum.at(out, (ty, tx), val)
    return out


# --------------------------------------------------------------------------
# sample sets on disk
# --------------------------------------------------------------------------

def _atomic_save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp",
                               dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            img.save(fh, format="PNG", optimize=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are plain data files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def generate_sample_set(out_dir: str | os.PathLike, count: int = 6,
                        seed: int = 0, width: int = 320, height: int = 256,
                        with_polyps_every: int = 2
                        ) -> list[tuple[Path, Path | None]]:
    """Write ``count`` generated frames (and masks) in Kvasir-SEG layout.

    Frame ``i`` is ``out_dir/images/sample_{i:03d}.png``.  Every
    ``with_polyps_every``-th frame (i % with_polyps_every == 0) gets polyps
    (1, sometimes 2) and a single-channel 0/255 mask
    ``out_dir/masks/sample_{i:03d}.png`` holding all of them; the others are
    normal frames without a mask file.  ``with_polyps_every <= 0`` means no
    polyps at all.  Files are written atomically and re-running overwrites
    them with identical bytes (a stale mask for a now polyp-free frame is
    removed).  Returns ``[(image_path, mask_path_or_None), ...]``.
    """
    count = int(count)
    if count < 0:
        raise ValueError("count must be >= 0")
    every = int(with_polyps_every)
    out = Path(out_dir)
    img_dir = out / "images"
    mask_dir = out / "masks"
    img_dir.mkdir(parents=True, exist_ok=True)
    result: list[tuple[Path, Path | None]] = []
    for i in range(count):
        frame_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
        has = every > 0 and i % every == 0
        n_polyps = 0
        if has:
            n_polyps = 2 if (frame_seed % 4 == 3) else 1
        frame, masks = generate_frame(frame_seed, width, height, n_polyps)
        name = f"sample_{i:03d}.png"
        ipath = img_dir / name
        _atomic_save_png(Image.fromarray(frame, "RGB"), ipath)
        mpath: Path | None = None
        if masks:
            union = np.zeros((height, width), bool)
            for m in masks:
                union |= m
            mpath = mask_dir / name
            _atomic_save_png(Image.fromarray(union.astype(np.uint8) * 255, "L"), mpath)
        else:
            stale = mask_dir / name
            if stale.exists():
                stale.unlink()
        result.append((ipath, mpath))
    return result
