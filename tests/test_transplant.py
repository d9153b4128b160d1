"""Transplant core: donors cut with their outline and a mucosa ring, fitted, placed only on free mucosa, pasted with
the label exactly the pasted outline and every pixel outside the footprint untouched."""

from __future__ import annotations

import numpy as np
import pytest

from engine.transplant import NoPlace, cut_donors, transplant
from engine.transplant.fitting import Fit, lab_statistics, match_colour, transform


def _frame(seed: int, polyp_centre=(60, 70), radius=14, size=(160, 200)):
    """A mucosa-coloured frame with texture, a black border band on the left, and one redder round polyp."""
    rng = np.random.default_rng(seed)
    height, width = size
    frame = np.zeros((height, width, 3), np.uint8)
    frame[...] = (190, 110, 100)
    frame = np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
    frame[:, :12] = 0  # the endoscope's black border
    yy, xx = np.mgrid[0:height, 0:width]
    polyp = (yy - polyp_centre[0]) ** 2 + (xx - polyp_centre[1]) ** 2 <= radius ** 2
    frame[polyp] = np.clip(frame[polyp].astype(int) + (30, -30, -20), 0, 255).astype(np.uint8)
    return frame, polyp


def test_donors_keep_outlined_polyps_on_the_visible_view_only():
    frame, polyp = _frame(0)
    at_border = np.zeros_like(polyp)
    at_border[70:90, 8:30] = True  # reaches into the black border: cut by the view
    tiny = np.zeros_like(polyp)
    tiny[120:124, 120:124] = True
    donors = cut_donors(frame, [polyp, at_border, tiny], "a.png", "sha")
    assert [d.polyp for d in donors] == [0]
    donor = donors[0]
    assert donor.mask.sum() == polyp.sum()
    assert not (donor.ring & donor.mask).any() and donor.ring.sum() > 50
    x, y, w, h = donor.box
    assert (frame[y:y + h, x:x + w] == donor.pixels).all()
    assert donor.area_fraction == pytest.approx(polyp.sum() / polyp.size)


@pytest.mark.parametrize("harmonize", ["none", "poisson"])
def test_paste_changes_only_its_footprint_on_free_mucosa(harmonize):
    donor = cut_donors(*_frame(1)[:1], [_frame(1)[1]], "donor.png", "sha")[0]
    target, own_polyp = _frame(2, polyp_centre=(100, 150))
    free = np.ones(own_polyp.shape, bool)
    free[:, :20] = False
    free[own_polyp] = False
    result = transplant(target, free, donor, 0.03, np.random.default_rng(5), harmonize=harmonize)
    assert (result.footprint <= free).all(), "the paste reached the border or the frame's own polyp"
    assert (result.label <= result.footprint).all()
    assert (result.image[~result.footprint] == target[~result.footprint]).all()
    assert result.record["size_placed"] == pytest.approx(result.label.sum() / result.label.size, abs=1e-6)
    assert result.record["size_placed"] == pytest.approx(0.03, rel=0.25)
    assert result.record["harmonize"] == harmonize and result.record["donor"]["frame"] == "donor.png"


def test_hard_paste_is_the_donor_itself_and_its_place_regenerates_from_the_record():
    frame, polyp = _frame(3)
    donor = cut_donors(frame, [polyp], "d.png", "sha")[0]
    target, _ = _frame(4, polyp_centre=(20, 190), radius=5)
    free = np.ones(target.shape[:2], bool)
    free[:, :20] = False
    result = transplant(target, free, donor, 0.02, np.random.default_rng(9), harmonize="none")
    fit = Fit(**{k: result.record["fit"][k] for k in ("scale", "angle", "flip", "warp", "warp_seed")})
    pixels, mask, ring, _ = transform(donor.pixels, donor.mask, donor.ring, fit)
    top, left = result.record["place"]["top"], result.record["place"]["left"]
    placed = np.zeros_like(result.label)
    placed[top:top + mask.shape[0], left:left + mask.shape[1]] = mask
    assert (placed == result.label).all()
    # without the colour match the polyp's pixels are the transformed donor's, exactly
    plain = transplant(target, free, donor, 0.02, np.random.default_rng(9), harmonize="none", colour_match=False)
    assert (plain.image[plain.label] == pixels[mask]).all()


def test_colour_match_moves_the_ring_to_the_target_statistics():
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal((150, 90, 80), 8, (40, 40, 3)), 0, 255).astype(np.uint8)
    ring = np.ones((40, 40), bool)
    target = np.clip(rng.normal((200, 130, 120), 8, (40, 40, 3)), 0, 255).astype(np.uint8)
    stats = lab_statistics(target, np.ones((40, 40), bool))
    matched, record = match_colour(pixels, ring, stats)
    after = lab_statistics(matched, ring)
    assert np.abs(after[0] - stats[0]).max() < 1.5
    assert record["colour_match"] == "lab-ring"
    same, record = match_colour(pixels, np.zeros((40, 40), bool), stats)
    assert same is pixels and record["colour_match"].startswith("none")


def test_no_free_place_is_said():
    frame, polyp = _frame(5)
    donor = cut_donors(frame, [polyp], "d.png", "sha")[0]
    with pytest.raises(NoPlace, match="no free, visible place"):
        transplant(frame, np.zeros(polyp.shape, bool), donor, 0.05, np.random.default_rng(0))


def test_same_seed_same_bytes():
    frame, polyp = _frame(6)
    donor = cut_donors(frame, [polyp], "d.png", "sha")[0]
    target, own = _frame(7, polyp_centre=(120, 60))
    free = ~own
    free[:, :20] = False
    first = transplant(target, free, donor, 0.04, np.random.default_rng(3), harmonize="poisson")
    second = transplant(target, free, donor, 0.04, np.random.default_rng(3), harmonize="poisson")
    assert first.image.tobytes() == second.image.tobytes() and first.record == second.record


def test_a_pixel_pipeline_starts_from_the_partly_noised_frame_and_others_refuse():
    """SDEdit, the model blending's engine: strength s runs the last s·steps steps from the frame noised to that
    point, so a lower strength stays closer to the frame; outside the mask every byte is kept; an SD bundle
    (latent space) refuses a strength in one line."""
    from engine.bundle.format import shipped_bundles_folder
    from engine.errors import InputError
    from engine.pipelines import open_pipeline

    frame, polyp = _frame(8, size=(96, 128))
    mask = np.zeros(polyp.shape, bool)
    mask[30:70, 40:100] = True
    pipe = open_pipeline(shipped_bundles_folder() / "polypforge-compact", provider="cpu", threads=1)
    prepared = pipe.prepare_frame(frame, mask)
    distance = {}
    for strength in (0.2, 1.0):
        (result,) = pipe.generate_variants(prepared, [4], steps=10, strength=strength)
        assert result.settings["strength"] == strength
        assert (result.image[~mask] == frame[~mask]).all()
        distance[strength] = np.abs(result.image[mask].astype(int) - frame[mask]).mean()
    assert distance[0.2] < distance[1.0]
    sd = open_pipeline(shipped_bundles_folder() / "demo-sd-inpaint", provider="cpu", threads=1)
    with pytest.raises(InputError, match="needs a pixel-inpaint bundle"):
        sd.generate_variants(sd.prepare_frame(frame, mask), [0], steps=2, strength=0.5)
