"""The measured attributes of a polyp, one function each, from a Scene (engine.captioning.scene).

Each function returns ``(value, measures)``: the word the caption uses and the numbers it was decided
from (written to the captions file's JSON column, so curators can filter and re-threshold). Lengths are
analysis pixels (the frame's longer side is 512), colours CIE L*a*b* (OpenCV, D65), spreads robust
(1.4826 · median absolute deviation), levels medians. Thresholds were set by looking at Kvasir-SEG frames
sorted by each measure (docs/captions.md).

Regions
- lesion: the polyp's mask eroded by ``LESION_ERODE_PX`` (2 px: its edge mixes lesion and mucosa),
  highlights left out; with fewer than ``MIN_PIXELS`` (12) left, the uneroded mask.
- mucosa ring: the band from ``RING_GAP_PX`` (3 px) out to 3 px + half the polyp's equivalent radius
  (clipped to ``RING_WIDTH_PX`` = 8..40 px) around it, inside the field of view, outside every polyp,
  highlights left out.
- background: the field of view outside every polyp dilated by ``BACKGROUND_GAP_PX`` (6 px).

colour — the lesion against its mucosa ring: Δa = median a*(lesion) − median a*(ring) (redness), with the
  lesion's own L*, a* and chroma C* = √(a*² + b*²):
  - whitish: L* ≥ ``WHITISH_MIN_L`` (74) and C* ≤ ``WHITISH_MAX_CHROMA`` (34): light, nearly colourless;
  - red: Δa ≥ ``RED_MIN_DELTA_A`` (+8) and a* ≥ ``RED_MIN_A`` (30): redder than its mucosa, and red;
  - pale: Δa ≤ ``PALE_MAX_DELTA_A`` (−6), or a* ≤ ``PALE_MAX_A`` (20): less red than its mucosa, or
    hardly red at all;
  - pink: otherwise (the mucosa's own hue).
surface — the lesion's lightness with highlights filled in, inside the mask eroded by 3 px:
  fine = spread of L* − Gaussian(L*, σ ``FINE_SIGMA_PX`` = 1.5 px): pits, granules, villi;
  coarse = spread of Gaussian(L*, σ ``COARSE_SIGMA_PX`` = 2 px) minus the quadratic surface fitted to it
  (the dome's overall shading taken out): lobes, creases, nodules;
  lobes = concavities of the outline deeper than ``LOBE_MIN_DEPTH`` (12 %) of the equivalent diameter,
  except where the deepest point lies within ``LOBE_EDGE_PX`` (4 px) of the edge of the view (a cut);
  - irregular: fine ≥ ``IRREGULAR_MIN_FINE`` (1.7 L* units);
  - lobulated: coarse ≥ ``LOBULATED_MIN_COARSE`` (6.0), or lobes ≥ 2, or one lobe and coarse ≥
    ``LOBULATED_MIN_COARSE_WITH_LOBE`` (4.5);
  - smooth: otherwise.
size — the polyp's share of the field of view (of the frame, not millimetres: a frame has no scale):
  diminutive < ``DIMINUTIVE_MAX_AREA`` (2.5 %), small < ``SMALL_MAX_AREA`` (10 %), else large.
outline — solidity = area / area of its convex hull inside the view (a polyp cut by the border is not made
  irregular by the cut) and axis ratio = minor / major axis of the mask's second moments:
  irregular when solidity < ``IRREGULAR_MAX_SOLIDITY`` (0.85); else round when the axis ratio is ≥
  ``ROUND_MIN_AXIS_RATIO`` (0.75); else oval.
elevation — shading: a raised lesion is lit on top and shadowed at its foot. shading = spread of the
  quadratic surface fitted to the lesion's L*; rim darkening = median L* of the mask eroded by ``RIM_PX``
  (4 px) minus that of the 4-px rim; ΔL = median L*(lesion) − median L*(ring):
  - raised: shading ≥ ``RAISED_MIN_SHADING`` (4.0) or rim darkening ≥ ``RAISED_MIN_RIM`` (8.0);
  - flat: shading < ``FLAT_MAX_SHADING`` (2.8), rim darkening < ``FLAT_MAX_RIM`` (7.0) and |ΔL| <
    ``FLAT_MAX_DELTA_L`` (8);
  - otherwise None: the shading does not tell, and the caption says nothing of it.
position — the centroid in the field of view's bounding box, in thirds: top / middle / bottom × left /
  centre / right ("at the top left", "in the centre", "on the right", …).
partly out of view — when at least ``PARTLY_OUT_MIN_EDGE`` (15 %) of the polyp's outline lies on the edge
  of the view (or of the frame).
background — findings, measured away from the view's edge (the field of view eroded by
  ``BACKGROUND_EDGE_PX`` = 14 px: over-lit, vignetted) and from bright glints (darkest channel ≥
  ``BRIGHT_MIN_LEVEL`` = 200, dilated by ``BRIGHT_HALO_PX`` = 4 px: their halos are yellowish), specks
  under ``SPECK_MAX_PX`` (10 px) dropped:
  - debris (yellowish debris or stool): hue angle atan2(b*, a*) ≥ ``DEBRIS_MIN_HUE`` (65°), b* ≥
    ``DEBRIS_MIN_B`` (32), C* ≥ ``DEBRIS_MIN_CHROMA`` (38), L* within ``DEBRIS_L`` (35..80), over ≥
    ``DEBRIS_MIN_FRACTION`` (0.5 %) of the background;
  - blood: L* ≤ ``BLOOD_MAX_L`` (45), a* ≥ ``BLOOD_MIN_A`` (45: more saturated than mucosa in shadow, which
    stays under about 42 on Kvasir-SEG), hue within ``BLOOD_HUE`` (10..34°: red, not the blue or purple of
    overlay boxes and dye), over ≥ ``BLOOD_MIN_FRACTION`` (1 %);
  - bubbles: at least ``BUBBLES_MIN_RINGS`` (3) ring-shaped highlights in the background: a highlight
    around a hole of ≥ ``RING_MIN_HOLE_PX`` (10 px) whose outline has circularity 4πA/P² ≥
    ``RING_MIN_CIRCULARITY`` (0.8) — the rim reflection of a bubble; letters (small holes) and the
    square glyphs of overlays (circularity π/4) do not count;
  - lumen (a dark lumen): one connected region of L* ≤ ``LUMEN_MAX_L`` (15) at least ``LUMEN_EDGE_PX``
    (20 px) inside the view (not the vignetting at its rim) covering ≥ ``LUMEN_MIN_FRACTION`` (2 %) of it;
  clean mucosa when none of debris, blood, bubbles.
lighting — specular highlights when they cover ≥ ``SPECULAR_MIN_FRACTION`` (2 %) of the polyp's mask;
  over-exposed when ≥ ``OVEREXPOSED_MIN_FRACTION`` (8 %) of the view is at L* ≥ ``OVEREXPOSED_MIN_L`` (92).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.captioning.scene import SPECULAR_MIN_LEVEL, Scene, dilate, erode

LESION_ERODE_PX = 2
RING_GAP_PX = 3
RING_WIDTH_PX = (8, 40)
BACKGROUND_GAP_PX = 6
MIN_PIXELS = 12  # fewer measured pixels than this: fall back to the uneroded region

WHITISH_MIN_L = 74.0
WHITISH_MAX_CHROMA = 34.0
RED_MIN_DELTA_A = 8.0
RED_MIN_A = 30.0
PALE_MAX_DELTA_A = -6.0
PALE_MAX_A = 20.0

FINE_SIGMA_PX = 1.5
COARSE_SIGMA_PX = 2.0
LOBE_MIN_DEPTH = 0.12
IRREGULAR_MIN_FINE = 1.7
LOBULATED_MIN_COARSE = 6.0
LOBULATED_MIN_COARSE_WITH_LOBE = 4.5
LOBE_EDGE_PX = 4

DIMINUTIVE_MAX_AREA = 0.025
SMALL_MAX_AREA = 0.10

IRREGULAR_MAX_SOLIDITY = 0.85
ROUND_MIN_AXIS_RATIO = 0.75

RIM_PX = 4
RAISED_MIN_SHADING = 4.0
RAISED_MIN_RIM = 8.0
FLAT_MAX_SHADING = 2.8
FLAT_MAX_RIM = 7.0
FLAT_MAX_DELTA_L = 8.0

BACKGROUND_EDGE_PX = 14
BRIGHT_MIN_LEVEL = 200
BRIGHT_HALO_PX = 4
SPECK_MAX_PX = 10
DEBRIS_MIN_HUE = 65.0
DEBRIS_MIN_B = 32.0
DEBRIS_MIN_CHROMA = 38.0
DEBRIS_L = (35.0, 80.0)
DEBRIS_MIN_FRACTION = 0.005
BLOOD_MAX_L = 45.0
BLOOD_MIN_A = 45.0
BLOOD_HUE = (10.0, 34.0)
BLOOD_MIN_FRACTION = 0.01
BUBBLES_MIN_RINGS = 3
RING_MIN_HOLE_PX = 10
RING_MIN_CIRCULARITY = 0.8
LUMEN_MAX_L = 15.0
LUMEN_EDGE_PX = 20
LUMEN_MIN_FRACTION = 0.02

PARTLY_OUT_MIN_EDGE = 0.15

SPECULAR_MIN_FRACTION = 0.02
OVEREXPOSED_MIN_L = 92.0
OVEREXPOSED_MIN_FRACTION = 0.08

COLOURS = ("pale", "pink", "red", "whitish")
SURFACES = ("smooth", "lobulated", "irregular")
SIZES = ("diminutive", "small", "large")
OUTLINES = ("round", "oval", "irregular")
ELEVATIONS = ("flat", "raised")
FINDINGS = ("debris", "bubbles", "blood", "lumen")
LIGHTING = ("specular highlights", "over-exposed")


# ---------------------------------------------------------------------------------------------- regions
def _enough(region: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    return region if region.sum() >= MIN_PIXELS else fallback


def lesion_region(scene: Scene, index: int) -> np.ndarray:
    polyp = scene.polyps[index]
    return _enough(erode(polyp, LESION_ERODE_PX) & ~scene.specular, _enough(polyp & ~scene.specular, polyp))


def equivalent_radius(mask: np.ndarray) -> float:
    return math.sqrt(float(mask.sum()) / math.pi)


def mucosa_ring(scene: Scene, index: int) -> np.ndarray:
    polyp = scene.polyps[index]
    width = int(np.clip(round(equivalent_radius(polyp) / 2), *RING_WIDTH_PX))
    others = dilate(scene.all_polyps, RING_GAP_PX)
    ring = dilate(polyp, RING_GAP_PX + width) & ~others & scene.fov
    return _enough(ring & ~scene.specular, _enough(ring, scene.fov & ~others))


def background_region(scene: Scene) -> np.ndarray:
    return scene.fov & ~dilate(scene.all_polyps, BACKGROUND_GAP_PX)


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else 0.0


def _robust_std(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def hue_degrees(lab: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(lab[..., 2], lab[..., 1]))


# ---------------------------------------------------------------------------------------------- attributes
def colour(scene: Scene, index: int) -> tuple[str, dict]:
    lesion = scene.lab[lesion_region(scene, index)]
    ring = scene.lab[mucosa_ring(scene, index)]
    lightness, a, b = (_median(lesion[:, c]) for c in range(3))
    delta_a = a - _median(ring[:, 1])
    delta_l = lightness - _median(ring[:, 0])
    chroma = math.hypot(a, b)
    if lightness >= WHITISH_MIN_L and chroma <= WHITISH_MAX_CHROMA:
        value = "whitish"
    elif delta_a >= RED_MIN_DELTA_A and a >= RED_MIN_A:
        value = "red"
    elif delta_a <= PALE_MAX_DELTA_A or a <= PALE_MAX_A:
        value = "pale"
    else:
        value = "pink"
    return value, {"lesion_L": lightness, "lesion_a": a, "lesion_b": b, "lesion_chroma": chroma,
                   "delta_a": delta_a, "delta_L": delta_l}


def _lobes(mask: np.ndarray, fov: np.ndarray) -> int:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0
    contour = max(contours, key=cv2.contourArea)
    if len(contour) < 5:
        return 0
    hull = cv2.convexHull(contour, returnPoints=False)
    try:
        defects = cv2.convexityDefects(contour, hull)
    except cv2.error:  # a self-touching contour: no defects can be told
        return 0
    if defects is None:
        return 0
    defects = defects.reshape(-1, 4)
    deep = defects[defects[:, 3] / 256.0 >= LOBE_MIN_DEPTH * 2 * equivalent_radius(mask)]
    # a concavity whose deepest point lies on the edge of the view is the view cutting the polyp, not a lobe
    outside = ~erode(fov, LOBE_EDGE_PX)
    points = contour.reshape(-1, 2)[deep[:, 2]] if len(deep) else np.zeros((0, 2), int)
    return int(sum(1 for x, y in points if not outside[y, x]))


def surface(scene: Scene, index: int) -> tuple[str, dict]:
    lightness = scene.lab_filled[..., 0]
    fine_detail = lightness - cv2.GaussianBlur(lightness, (0, 0), FINE_SIGMA_PX)
    smoothed = cv2.GaussianBlur(lightness, (0, 0), COARSE_SIGMA_PX)
    polyp = scene.polyps[index]
    inner = _enough(erode(polyp, LESION_ERODE_PX + 1), polyp)
    fine = _robust_std(fine_detail[inner])
    # what is left of the lesion's lightness once its overall shading (a quadratic dome) is taken out
    coarse = _robust_std(smoothed[inner] - _quadratic_fit(smoothed, inner))
    lobes = _lobes(polyp, scene.fov)
    if fine >= IRREGULAR_MIN_FINE:
        value = "irregular"
    elif coarse >= LOBULATED_MIN_COARSE or lobes >= 2 or (lobes == 1 and coarse >= LOBULATED_MIN_COARSE_WITH_LOBE):
        value = "lobulated"
    else:
        value = "smooth"
    return value, {"fine_texture": fine, "coarse_texture": coarse, "lobes": lobes}


def size(scene: Scene, index: int) -> tuple[str, dict]:
    fraction = float(scene.polyps[index].sum()) / max(1, int(scene.fov.sum()))
    if fraction < DIMINUTIVE_MAX_AREA:
        value = "diminutive"
    elif fraction < SMALL_MAX_AREA:
        value = "small"
    else:
        value = "large"
    return value, {"area_fraction": fraction}


def outline(scene: Scene, index: int) -> tuple[str, dict]:
    mask = scene.polyps[index]
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = np.zeros(mask.shape, np.uint8)
    if contours:
        cv2.fillPoly(hull, [cv2.convexHull(np.concatenate(contours))], 1)
    # the hull inside the view only: a polyp cut by the edge of the view is not made irregular by the cut
    hull_area = float((hull.astype(bool) & scene.fov | mask).sum())
    solidity = float(mask.sum()) / hull_area if hull_area > 0 else 1.0
    rows, cols = np.nonzero(scene.polyps_full[index])
    if len(rows) >= 3:
        eigen = np.linalg.eigvalsh(np.cov(np.stack([cols, rows]).astype(np.float64)))
        axis_ratio = math.sqrt(max(eigen[0], 0.0) / eigen[1]) if eigen[1] > 0 else 1.0
    else:
        axis_ratio = 1.0
    if solidity < IRREGULAR_MAX_SOLIDITY:
        value = "irregular"
    elif axis_ratio >= ROUND_MIN_AXIS_RATIO:
        value = "round"
    else:
        value = "oval"
    return value, {"solidity": solidity, "axis_ratio": axis_ratio}


def _quadratic_fit(values: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Least-squares quadratic surface a + bx + cy + dx² + exy + fy² over the region's pixels."""
    rows, cols = np.nonzero(region)
    if len(rows) < 12:
        return values[rows, cols].astype(np.float64)
    y = (rows - rows.mean()) / max(1.0, rows.std())
    x = (cols - cols.mean()) / max(1.0, cols.std())
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, values[rows, cols].astype(np.float64), rcond=None)
    return design @ coefficients


def elevation(scene: Scene, index: int) -> tuple[str | None, dict]:
    polyp = scene.polyps[index]
    lesion = lesion_region(scene, index)
    lightness = scene.lab[..., 0]
    spread = _robust_std(_quadratic_fit(lightness, lesion))
    centre = erode(polyp, RIM_PX) & ~scene.specular
    rim = polyp & ~centre & ~scene.specular
    rim_darkening = (_median(lightness[centre]) - _median(lightness[rim])) if centre.sum() >= MIN_PIXELS and rim.any() else 0.0
    delta_l = _median(lightness[lesion]) - _median(lightness[mucosa_ring(scene, index)])
    if spread >= RAISED_MIN_SHADING or rim_darkening >= RAISED_MIN_RIM:
        value = "raised"
    elif spread < FLAT_MAX_SHADING and rim_darkening < FLAT_MAX_RIM and abs(delta_l) < FLAT_MAX_DELTA_L:
        value = "flat"
    else:
        value = None
    return value, {"shading": spread, "rim_darkening": rim_darkening}


POSITION_WORDS = {
    ("top", "left"): "at the top left", ("top", "centre"): "at the top", ("top", "right"): "at the top right",
    ("middle", "left"): "on the left", ("middle", "centre"): "in the centre", ("middle", "right"): "on the right",
    ("bottom", "left"): "at the bottom left", ("bottom", "centre"): "at the bottom",
    ("bottom", "right"): "at the bottom right",
}


def position(scene: Scene, index: int) -> tuple[str, dict]:
    polyp = scene.polyps[index]
    rows, cols = np.nonzero(polyp)
    fov_rows, fov_cols = np.nonzero(scene.fov)
    top, bottom = fov_rows.min(), fov_rows.max() + 1
    left, right = fov_cols.min(), fov_cols.max() + 1
    x = float((cols.mean() + 0.5 - left) / max(1, right - left))
    y = float((rows.mean() + 0.5 - top) / max(1, bottom - top))
    column = ("left", "centre", "right")[min(2, int(np.clip(x, 0, 1) * 3))]
    row = ("top", "middle", "bottom")[min(2, int(np.clip(y, 0, 1) * 3))]
    value = f"{row} {column}" if (row, column) != ("middle", "centre") else "centre"
    return value, {"x": x, "y": y}


def partly_out_of_view(scene: Scene, index: int) -> tuple[bool, dict]:
    """The share of the polyp's outline lying on the edge of the view (or of the frame): cut off there."""
    polyp = scene.polyps[index]
    outline_px = polyp & ~erode(polyp, 1)
    beyond = ~erode(np.pad(scene.fov, 1), 2)[1:-1, 1:-1]
    share = float((outline_px & beyond).sum()) / max(1, int(outline_px.sum()))
    return share >= PARTLY_OUT_MIN_EDGE, {"outline_on_edge": share}


def position_words(value: str) -> str:
    if value == "centre":
        return POSITION_WORDS[("middle", "centre")]
    row, column = value.split()
    return POSITION_WORDS[(row, column)]


def _without_specks(mask: np.ndarray) -> np.ndarray:
    """The mask without 8-connected specks under SPECK_MAX_PX pixels (sensor and JPEG noise)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= SPECK_MAX_PX
    return keep[labels]


def _ring_highlights(scene: Scene, region: np.ndarray) -> int:
    """Highlights shaped like a ring (a round outline around a hole of at least RING_MIN_HOLE_PX): the rim
    reflection of a bubble. Square overlay glyphs (circularity π/4) and letters (small holes) do not count."""
    core = (scene.rgb.min(axis=2) >= SPECULAR_MIN_LEVEL) & region
    contours, hierarchy = cv2.findContours(core.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return 0
    rings = set()
    for index, (_, _, _, parent) in enumerate(hierarchy[0]):
        if parent < 0 or cv2.contourArea(contours[index]) < RING_MIN_HOLE_PX:
            continue
        outer = contours[parent]
        perimeter = cv2.arcLength(outer, True)
        if perimeter > 0 and 4 * math.pi * cv2.contourArea(outer) / perimeter ** 2 >= RING_MIN_CIRCULARITY:
            rings.add(int(parent))
    return len(rings)


def background(scene: Scene) -> tuple[list[str], dict]:
    region = background_region(scene)
    lab = scene.lab
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    hue = hue_degrees(lab)
    # colour findings away from the edge of the view (over-lit, vignetted) and from bright glints' halos
    colour_region = region & erode(scene.fov, BACKGROUND_EDGE_PX) & ~dilate(
        scene.rgb.min(axis=2) >= BRIGHT_MIN_LEVEL, BRIGHT_HALO_PX)
    total = max(1, int(colour_region.sum()))
    debris = _without_specks(colour_region & (hue >= DEBRIS_MIN_HUE) & (b >= DEBRIS_MIN_B)
                             & (np.hypot(a, b) >= DEBRIS_MIN_CHROMA)
                             & (lightness >= DEBRIS_L[0]) & (lightness <= DEBRIS_L[1]))
    blood = _without_specks(colour_region & (lightness <= BLOOD_MAX_L) & (a >= BLOOD_MIN_A)
                            & (hue >= BLOOD_HUE[0]) & (hue <= BLOOD_HUE[1]))
    rings = _ring_highlights(scene, region)
    # a lumen opens inside the view; the dark band of vignetting at its rim is not one
    dark = (erode(scene.fov, LUMEN_EDGE_PX) & (lightness <= LUMEN_MAX_L)).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    largest_dark = int(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0
    lumen_fraction = largest_dark / max(1, int(scene.fov.sum()))
    measures = {"debris_fraction": float(debris.sum()) / total, "blood_fraction": float(blood.sum()) / total,
                "ring_highlights": rings, "lumen_fraction": lumen_fraction}
    findings = []
    if measures["debris_fraction"] >= DEBRIS_MIN_FRACTION:
        findings.append("debris")
    if rings >= BUBBLES_MIN_RINGS:
        findings.append("bubbles")
    if measures["blood_fraction"] >= BLOOD_MIN_FRACTION:
        findings.append("blood")
    if lumen_fraction >= LUMEN_MIN_FRACTION:
        findings.append("lumen")
    return findings, measures


def lighting(scene: Scene, index: int) -> tuple[list[str], dict]:
    polyp = scene.polyps[index]
    specular_fraction = float((polyp & scene.specular).sum()) / max(1, int(polyp.sum()))
    glare = float((scene.fov & (scene.lab[..., 0] >= OVEREXPOSED_MIN_L)).sum()) / max(1, int(scene.fov.sum()))
    found = []
    if specular_fraction >= SPECULAR_MIN_FRACTION:
        found.append("specular highlights")
    if glare >= OVEREXPOSED_MIN_FRACTION:
        found.append("over-exposed")
    return found, {"specular_fraction": specular_fraction, "glare_fraction": glare}
