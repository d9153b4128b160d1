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
from typing import List, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["generate_frame", "generate_sample_set"]

_MIN_SIDE = 32
_MAX_SIDE = 8192


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth band-limited noise, float32 (h, w), roughly zero mean / unit std.

    ``cells`` is the number of noise cells across the longer side.
    """
    cells = max(1.0, float(cells))
    scale = max(h, w) / cells
    gh = int(math.ceil(h / scale)) + 4
    gw = int(math.ceil(w / scale)) + 4
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    img = Image.fromarray(grid, mode="F")
    # sample the interior of the grid so borders are not clamped
    box = (1.5, 1.5, 1.5 + w / scale, 1.5 + h / scale)
    out = np.asarray(img.resize((w, h), Image.BICUBIC, box=box), dtype=np.float32)
    sd = float(out.std())
    if sd > 1e-6:
        out = (out - float(out.mean())) / sd
    return out


def _fbm(rng: np.random.Generator, h: int, w: int, cells: float,
         octaves: int = 3, gain: float = 0.5) -> np.ndarray:
    total = np.zeros((h, w), np.float32)
    amp, norm = 1.0, 0.0
    for i in range(octaves):
        total += amp * _noise(rng, h, w, cells * (2 ** i))
        norm += amp * amp
        amp *= gain
    return total / math.sqrt(norm)


def _border_sdf(h: int, w: int, inset: float, radius: float) -> np.ndarray:
    """Signed distance (pixels) to the visible rounded rectangle; <0 inside."""
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    hx = w / 2.0 - inset
    hy = h / 2.0 - inset
    qx = np.abs(xs - w / 2.0) - (hx - radius)
    qy = np.abs(ys - h / 2.0) - (hy - radius)
    ox = np.maximum(qx, 0.0)
    oy = np.maximum(qy, 0.0)
    outside = np.sqrt(ox * ox + oy * oy)
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return (outside + inside - radius).astype(np.float32)


class _Blob:
    """An irregular, ellipse-like polyp outline: rho(x, y) <= 1 inside."""

    def __init__(self, rng: np.random.Generator, cx: float, cy: float, size: float):
        self.cx, self.cy = cx, cy
        aspect = rng.uniform(0.7, 1.0)
        self.ax = size
        self.ay = size * aspect
        self.rot = rng.uniform(0, math.pi)
        k = np.arange(2, 6)
        self.harm_k = k
        self.harm_a = (rng.uniform(0.02, 0.085, size=k.size) / (k - 1) ** 0.6)
        self.harm_p = rng.uniform(0, 2 * math.pi, size=k.size)
        self.rmax = float(1.0 + self.harm_a.sum())

    def bbox(self, pad: float) -> Tuple[float, float, float, float]:
        r = max(self.ax, self.ay) * self.rmax + pad
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r

    def rho(self, xs: np.ndarray, ys: np.ndarray, grow: float = 0.0) -> np.ndarray:
        """Normalised radial coordinate; ``grow`` pixels enlarge the outline."""
        dx = xs - self.cx
        dy = ys - self.cy
        c, s = math.cos(self.rot), math.sin(self.rot)
        u = c * dx + s * dy
        v = -s * dx + c * dy
        theta = np.arctan2(v / self.ay, u / self.ax)
        d = np.sqrt(u * u + v * v)
        # radius of the base ellipse along this direction
        cu, sv = np.cos(theta), np.sin(theta)
        ell = np.sqrt((self.ax * cu) ** 2 + (self.ay * sv) ** 2)
        wobble = np.ones_like(theta)
        for k, a, p in zip(self.harm_k, self.harm_a, self.harm_p):
            wobble += a * np.cos(k * theta + p)
        return d / (ell * wobble + grow)


def _window(bbox, h, w):
    x0, y0, x1, y1 = bbox
    x0 = max(0, int(math.floor(x0)))
    y0 = max(0, int(math.floor(y0)))
    x1 = min(w, int(math.ceil(x1)) + 1)
    y1 = min(h, int(math.ceil(y1)) + 1)
    return x0, y0, x1, y1


def _grid(x0, y0, x1, y1):
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return xs, ys


def _place_polyps(rng, n, h, w, sdf, margin, light, min_light) -> List[_Blob]:
    """Place ``n`` non-overlapping blobs strictly inside the visible area."""
    s = min(h, w)
    blobs: List[_Blob] = []
    masks_local = []  # (x0, y0, x1, y1, bool array) per placed blob
    gap = max(3.0, 0.03 * s)
    for _ in range(n):
        placed = False
        size_hi = rng.uniform(0.11, 0.19) * s / max(1.0, math.sqrt(n) * 0.85)
        for attempt in range(400):
            shrink = 0.985 ** attempt
            size = max(3.0, size_hi * shrink * rng.uniform(0.8, 1.0))
            cx = rng.uniform(0, w)
            cy = rng.uniform(0, h)
            iy, ix = min(h - 1, int(cy)), min(w - 1, int(cx))
            if sdf[iy, ix] > -(margin + size):
                continue
            # prefer the wall, not the dark lumen (relaxed as attempts grow)
            if attempt < 250 and light[iy, ix] < min_light:
                continue
            blob = _Blob(rng, cx, cy, size)
            x0, y0, x1, y1 = _window(blob.bbox(gap + 2), h, w)
            xs, ys = _grid(x0, y0, x1, y1)
            inside = blob.rho(xs, ys) < 1.0
            if not inside.any():
                continue
            if (sdf[y0:y1, x0:x1][inside] > -margin).any():
                continue
            # keep the whole polyp on the lit wall, not sunk into the lumen
            if attempt < 300 and float(light[y0:y1, x0:x1][inside].min()) < 0.4 * min_light / 0.6:
                continue
            clear = blob.rho(xs, ys, grow=gap) < 1.0
            overlap = False
            for (a0, b0, a1, b1, m) in masks_local:
                ix0, iy0 = max(x0, a0), max(y0, b0)
                ix1, iy1 = min(x1, a1), min(y1, b1)
                if ix0 >= ix1 or iy0 >= iy1:
                    continue
                sub_new = clear[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
                sub_old = m[iy0 - b0:iy1 - b0, ix0 - a0:ix1 - a0]
                if (sub_new & sub_old).any():
                    overlap = True
                    break
            if overlap:
                continue
            blobs.append(blob)
            masks_local.append((x0, y0, x1, y1, inside))
            placed = True
            break
        if not placed:
            raise ValueError(
                f"cannot fit {n} non-overlapping polyps into a {w}x{h} frame")
    return blobs


# --------------------------------------------------------------------------
# main generator
# --------------------------------------------------------------------------

def generate_frame(seed: int, width: int = 320, height: int = 256,
                   polyps: int = 1) -> Tuple[np.ndarray, List[np.ndarray]]:
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
    sdf = _border_sdf(h, w, inset, corner)
    visible_a = _smoothstep(0.8, -0.8, sdf)  # anti-aliased edge

    # ---- geometry: lumen + warped radial coordinate -------------------------
    ang = r_scene.uniform(0, 2 * math.pi)
    off = r_scene.uniform(0.12, 0.42)
    lx = w / 2.0 + math.cos(ang) * off * w
    ly = h / 2.0 + math.sin(ang) * off * h
    lumen_size = r_scene.uniform(0.07, 0.15) * s
    warp_amp = 0.06 * s
    wx = _noise(r_scene, h, w, 3.0) * warp_amp
    wy = _noise(r_scene, h, w, 3.0) * warp_amp
    dx = xs - lx + wx
    dy = (ys - ly + wy) * r_scene.uniform(1.0, 1.35)
    r = np.sqrt(dx * dx + dy * dy) + 1e-3
    theta = np.arctan2(dy, dx)
    rn = r / lumen_size  # 1 ~ lumen rim

    # ---- illumination -----------------------------------------------------
    far = np.hypot(max(lx, w - lx), max(ly, h - ly)) / lumen_size
    t = np.clip(np.log(rn) / math.log(max(far, 2.0)), 0.0, 1.2)
    E = 0.16 + 0.98 * t ** 0.9
    E *= 1.0 - 0.9 * _smoothstep(2.2, 0.0, rn) ** 1.5  # dark lumen hole
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
    u += 0.06 * _noise(r_scene, h, w, 6.0)
    f = u - np.floor(u)
    # f increases outwards; f=0 is a fold crest: bright, facing the camera.
    # Outwards of it the surface turns away and darkens; the band just
    # inside the next crest is its shadow, ending in a sharp occluding edge.
    edge_soft = r_scene.uniform(0.03, 0.08)
    crest = 1.0 + 0.10 * _smoothstep(0.0, 0.06, f) * _smoothstep(0.35, 0.06, f)
    shade = 1.0 - 0.5 * np.power(_smoothstep(0.62, 1.0 - edge_soft * 0.5, f), 2.0)
    ridge = crest * shade
    ridge = ridge + (1.0 - ridge) * _smoothstep(1.0 - edge_soft, 1.0, f)
    strength = np.clip(0.45 + 0.7 * _noise(r_scene, h, w, 2.5), 0.0, 1.0)
    strength *= _smoothstep(0.9, 2.2, rn) * r_scene.uniform(0.6, 0.9)
    fold = 1.0 + strength * (ridge - 1.0)
    E *= fold
    # fine granular relief of the mucosa
    E *= 1.0 + 0.015 * _fbm(r_scene, h, w, 0.12 * s, 2)

    # ---- mucosa albedo ----------------------------------------------------
    tint = _fbm(r_tex, h, w, 4.0, 3)
    fine = _fbm(r_tex, h, w, 24.0, 2)
    # vessels: thin ridges of band-limited noise
    vcells = 10.0 * max(1.0, s / 256.0) ** 0.5
    v1 = 1.0 - np.abs(_fbm(r_tex, h, w, vcells, 2, 0.45))
    v2 = 1.0 - np.abs(_fbm(r_tex, h, w, vcells * 2.2, 1))
    vessels = 0.6 * _smoothstep(0.95, 0.997, v1) + 0.35 * _smoothstep(0.96, 0.997, v2)
    vessels *= np.clip(0.4 + 0.6 * _noise(r_tex, h, w, 3.0), 0.0, 1.0)
    vessels *= r_tex.uniform(0.15, 0.7)
    hue = r_tex.uniform(-1, 1)
    alb_r = 1.0 + 0.025 * tint + 0.02 * fine
    alb_g = 1.0 + 0.04 * tint + 0.03 * fine + 0.05 * hue - 0.40 * vessels
    alb_b = 1.0 + 0.05 * tint + 0.03 * fine + 0.07 * hue - 0.40 * vessels
    alb = [alb_r, alb_g, alb_b]

    # ---- polyps ------------------------------------------------------------
    masks: List[np.ndarray] = []
    spec_extra = np.zeros((h, w), np.float32)
    if polyps > 0:
        margin = max(3.0, 0.025 * s)
        blobs = _place_polyps(r_poly, polyps, h, w, sdf, margin, E, 0.6)
        for blob in blobs:
            spec_extra += _render_polyp(r_poly, blob, h, w, E, alb, masks)

    # ---- tone mapping: illumination -> RGB ------------------------------------
    exposure = r_scene.uniform(0.98, 1.12)
    Ex = np.clip(E * exposure, 0.0, None)
    # red follows the light; green/blue are a fraction of red that grows in
    # the brightest areas (they look pale/peach, darker areas orange-brown)
    red = 250.0 * Ex * alb[0]
    pale = _smoothstep(0.72, 1.08, Ex)
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


def _render_polyp(rng, blob: _Blob, h, w, E, alb, masks) -> np.ndarray:
    """Shade one polyp into E/alb in place, append its mask, return speculars."""
    size = max(blob.ax, blob.ay)
    x0, y0, x1, y1 = _window(blob.bbox(0.45 * size + 3), h, w)
    xs, ys = _grid(x0, y0, x1, y1)
    rho = blob.rho(xs, ys)
    mask_local = rho < 1.0
    full = np.zeros((h, w), bool)
    full[y0:y1, x0:x1] = mask_local
    masks.append(full)

    # dome height: flattened top, steeper flank, soft foot
    base = np.clip(1.0 - rho * rho, 0.0, 1.0)
    height = np.power(base, rng.uniform(0.45, 0.75)) * size * rng.uniform(0.55, 0.9)
    # lumpy surface
    hh, ww = height.shape
    bumps = _fbm(rng, hh, ww, max(2.0, ww / max(3.0, size * 0.35)), 2)
    height = height * (1.0 + 0.06 * bumps)
    gy, gx = np.gradient(height)
    nz = 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)
    nx, ny = -gx * nz, -gy * nz
    # light sits at the camera (image centre), slightly above
    lxv = (w / 2.0 - blob.cx) / (1.6 * min(h, w))
    lyv = (h / 2.0 - blob.cy) / (1.6 * min(h, w)) - 0.12
    ln = math.sqrt(lxv * lxv + lyv * lyv + 1.0)
    L = (lxv / ln, lyv / ln, 1.0 / ln)
    ndl = np.clip(nx * L[0] + ny * L[1] + nz * L[2], 0.0, 1.0)
    # half-vector with view along +z
    hv = np.array([L[0], L[1], L[2] + 1.0])
    hv /= np.linalg.norm(hv)
    ndh = np.clip(nx * hv[0] + ny * hv[1] + nz * hv[2], 0.0, 1.0)

    alpha = _smoothstep(1.08, 0.88, rho)        # colour blend
    alpha_e = _smoothstep(1.0, 0.9, rho)        # shading blend (no flat rim)
    E_loc = E[y0:y1, x0:x1]
    lift = rng.uniform(1.10, 1.25)  # raised: closer to the light
    inside = rho < 1.0
    # base light on the polyp: its surroundings, without fold/lumen detail
    E_base = max(0.6, float(np.percentile(E_loc[inside], 70)))
    E_p = E_base * lift * (0.42 + 0.64 * ndl)
    # contact shadow on the side away from the light (outside the rim)
    sx = blob.cx - L[0] * size * 0.25
    sy = blob.cy - L[1] * size * 0.25
    ring = np.clip(blob.rho(xs - (sx - blob.cx), ys - (sy - blob.cy)), 0, 10)
    shadow = 0.30 * _smoothstep(1.35, 0.95, ring) * (1.0 - alpha_e)
    E[y0:y1, x0:x1] = E_loc * (1.0 - shadow) * (1.0 - alpha_e) + E_p * alpha_e

    # polyp colour: redder (adenoma) or paler (hyperplastic) than the wall
    kind = rng.uniform()
    pits = _noise(rng, hh, ww, max(4.0, ww / max(2.5, size * 0.09)))
    pit = _smoothstep(0.3, 1.4, np.abs(pits))
    if kind < 0.6:
        dg, db = rng.uniform(-0.25, -0.14), rng.uniform(-0.22, -0.10)
    else:
        dg, db = rng.uniform(0.07, 0.15), rng.uniform(0.12, 0.22)
    pg = 1.0 + dg - 0.12 * pit
    pb = 1.0 + db - 0.10 * pit
    pr = 1.0 + 0.02 * pit
    for c, p in enumerate((pr, pg, pb)):
        sub = alb[c][y0:y1, x0:x1]
        # vessels fade on the polyp surface
        alb[c][y0:y1, x0:x1] = sub * (1.0 - alpha) + (0.5 * sub + 0.5) * p * alpha

    # glints
    shin = rng.uniform(60, 160)
    glint = np.power(ndh, shin) * 1.4
    glint *= _smoothstep(0.2, 0.8, np.abs(_noise(rng, hh, ww, max(3.0, ww / max(2.0, size * 0.3)))) + 0.35)
    glint *= alpha_e
    out = np.zeros((h, w), np.float32)
    out[y0:y1, x0:x1] = glint
    return out


def _speculars(rng, h, w, E, rn, f, strength) -> np.ndarray:
    """Small white wet reflections, mostly on lit fold ridges."""
    s = min(h, w)
    out = np.zeros((h, w), np.float32)
    n_clusters = int(rng.integers(3, 8))
    n_total = int(rng.integers(10, 28) * max(1.0, (h * w) / (320 * 256)) ** 0.35)
    # candidate positions: bright wall, near the lit side of a fold
    weight = np.clip(E - 0.55, 0.0, None) ** 2 * (0.3 + _smoothstep(0.05, 0.3, f) *
                                                  _smoothstep(0.6, 0.4, f) * strength)
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
        x0, y0, x1, y1 = _window((px - R, py - R, px + R, py + R), h, w)
        if x0 >= x1 or y0 >= y1:
            continue
        gx, gy = _grid(x0, y0, x1, y1)
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


def generate_sample_set(out_dir: Union[str, os.PathLike], count: int = 6,
                        seed: int = 0, width: int = 320, height: int = 256,
                        with_polyps_every: int = 2
                        ) -> List[Tuple[Path, Optional[Path]]]:
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
    result: List[Tuple[Path, Optional[Path]]] = []
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
        mpath: Optional[Path] = None
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
