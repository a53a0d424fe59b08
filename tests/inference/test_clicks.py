"""Clicks without a server: the parser's two forms and its refusals, the grid mapping, and the guidance
signal against MONAI's own ``AddGuidanceSignalDeepEditd``."""

from __future__ import annotations

import numpy as np
import pytest
from monai.apps.deepedit.transforms import AddGuidanceSignalDeepEditd

from server.errors import BadRequest
from server.inference.clicks import parse_clicks, to_grid
from server.inference.deepedit import GUIDANCE_SIGMA, guidance_channels

NAMES = ["background", "liver", "tumour"]


def test_both_plugin_forms_parse_to_points_per_label() -> None:
    deepedit = parse_clicks(
        {"liver": [[1, 2, 3]], "background": [[4, 5, 6]], "label": "liver"}, NAMES, (9, 9, 9)
    )
    grow = parse_clicks(
        {"label": "liver", "foreground": [[1, 2, 3]], "background": [[4, 5, 6]]}, NAMES, (9, 9, 9)
    )
    assert deepedit.points == grow.points == {"background": [[4, 5, 6]], "liver": [[1, 2, 3]], "tumour": []}
    assert deepedit.label == grow.label == "liver" and grow.count == 2
    assert parse_clicks({}, NAMES, (9, 9, 9)).count == 0  # no clicks: the automatic mode
    # Floats from a viewer are rounded to the nearest voxel.
    assert parse_clicks({"tumour": [[1.4, 2.6, 0]]}, NAMES, (9, 9, 9)).points["tumour"] == [[1, 3, 0]]


@pytest.mark.parametrize(
    "params",
    [
        {"liver": [[9, 0, 0]]},
        {"liver": [[-1, 0, 0]]},
        {"liver": [[1, 2]]},
        {"liver": [1, 2, 3]},
        {"liver": "here"},
        {"liver": [["1", 2, 3]]},
        {"foreground": [[1, 2, 3]]},  # two labels: which one is meant?
        {"foreground": [[1, 2, 3]], "label": "background"},
        {"label": 3},
        {"liver": [[1, 1, 1]] * 1001},
    ],
)
def test_bad_clicks_are_refused(params: dict) -> None:
    with pytest.raises(BadRequest):
        parse_clicks(params, NAMES, (9, 9, 9))


def test_points_follow_the_affines() -> None:
    source = np.diag([2.0, 2.0, 2.0, 1.0])
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = 19.0  # a 20-voxel axis at 1 mm, reversed
    assert to_grid([[0, 3, 4], [9, 0, 0]], source, flipped, (20, 20, 20)) == [[19, 6, 8], [1, 0, 0]]


@pytest.mark.parametrize("sigma", [GUIDANCE_SIGMA, 1.0, 2.5])
def test_guidance_matches_monai_add_guidance_signal(sigma: float) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 30, 24, 20)).astype(np.float32)
    guidance = {
        "background": [[0, 0, 0], [29, 23, 19]],  # corners: the kernel is cut at the edges
        "liver": [[15, 12, 10], [16, 12, 10], [15, 12, 10]],  # overlapping and repeated
        "tumour": [],
    }
    ours = guidance_channels(image, guidance, sigma)
    step = AddGuidanceSignalDeepEditd(keys="image", guidance="guidance", sigma=sigma)
    theirs = np.asarray(step({"image": image.copy(), "guidance": guidance})["image"])
    assert ours.shape == theirs.shape == (4, 30, 24, 20)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
