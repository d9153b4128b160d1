"""The sample frames' polyps: irregular ellipse-like outlines (Blob), placed without overlap on the lit wall
inside the visible area (place_polyps), and shaded into the frame as a lit dome with its own colour, pit
texture, contact shadow and glints (render_polyp)."""

from __future__ import annotations

import math

import numpy as np

from engine.samples.primitives import fbm, noise, pixel_grid, pixel_window, smoothstep


class Blob:
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

    def bbox(self, pad: float) -> tuple[float, float, float, float]:
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


def place_polyps(rng, n, h, w, sdf, margin, light, min_light) -> list[Blob]:
    """Place ``n`` non-overlapping blobs strictly inside the visible area."""
    s = min(h, w)
    blobs: list[Blob] = []
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
            blob = Blob(rng, cx, cy, size)
            x0, y0, x1, y1 = pixel_window(blob.bbox(gap + 2), h, w)
            xs, ys = pixel_grid(x0, y0, x1, y1)
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


def render_polyp(rng, blob: Blob, h, w, E, alb, masks) -> np.ndarray:
    """Shade one polyp into E/alb in place, append its mask, return speculars."""
    size = max(blob.ax, blob.ay)
    x0, y0, x1, y1 = pixel_window(blob.bbox(0.45 * size + 3), h, w)
    xs, ys = pixel_grid(x0, y0, x1, y1)
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
    bumps = fbm(rng, hh, ww, max(2.0, ww / max(3.0, size * 0.35)), 2)
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

    alpha = smoothstep(1.08, 0.88, rho)        # colour blend
    alpha_e = smoothstep(1.0, 0.9, rho)        # shading blend (no flat rim)
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
    shadow = 0.30 * smoothstep(1.35, 0.95, ring) * (1.0 - alpha_e)
    E[y0:y1, x0:x1] = E_loc * (1.0 - shadow) * (1.0 - alpha_e) + E_p * alpha_e

    # polyp colour: redder (adenoma) or paler (hyperplastic) than the wall
    kind = rng.uniform()
    pits = noise(rng, hh, ww, max(4.0, ww / max(2.5, size * 0.09)))
    pit = smoothstep(0.3, 1.4, np.abs(pits))
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
    glint *= smoothstep(0.2, 0.8, np.abs(noise(rng, hh, ww, max(3.0, ww / max(2.0, size * 0.3)))) + 0.35)
    glint *= alpha_e
    out = np.zeros((h, w), np.float32)
    out[y0:y1, x0:x1] = glint
    return out
