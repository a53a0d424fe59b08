"""The click bias: each click's label raised around it until it leads there, and nothing else moved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.inference.click_bias import MARGIN, TRUNCATE, WIDTH, biased_probabilities, biased_scores

SIZE = 48
CENTRE = np.array([24, 24, 24])


def ball_scores(radius: float, steepness: float = 1.5) -> torch.Tensor:
    """Logits (background, ball) of a network that draws a ball of ``radius`` with a soft edge: the
    ball's logit falls off by ``steepness`` per voxel across the boundary."""
    grid = np.indices((SIZE,) * 3)
    distance = np.sqrt(((grid - CENTRE[:, None, None, None]) ** 2).sum(0))
    ball = steepness * (radius - distance)
    return torch.from_numpy(np.stack([np.zeros_like(ball), ball]).astype(np.float32))


def labels(scores: torch.Tensor) -> np.ndarray:
    return scores.argmax(0).numpy()


def test_a_click_just_outside_grows_the_shell_around_it_and_nothing_far_away() -> None:
    scores = ball_scores(radius=6.0)
    click = [24, 24, 24 + 8]  # two voxels past the drawn edge
    assert labels(scores)[tuple(click)] == 0
    out = biased_scores(scores, [(1, click)])
    after, before = labels(out), labels(scores)
    assert after[tuple(click)] == 1
    at = out[:, 24, 24, 32]
    assert float(at[1] - at[0]) == pytest.approx(MARGIN, abs=1e-4)  # just enough, no more
    grown = after.astype(bool) & ~before.astype(bool)
    # The boundary moved where the click is, following the ball's shape, and only there.
    assert grown[24, 24, 31] and grown[24, 25, 31]
    assert not grown[24, 24, 24 - 8] and not grown[24, 24, 34]
    reach = int(TRUNCATE * WIDTH)
    far = np.ones(scores.shape[1:], bool)
    far[tuple(slice(max(c - reach, 0), c + reach + 1) for c in click)] = False
    assert torch.equal(out[:, far], scores[:, far])
    assert torch.equal(scores, ball_scores(radius=6.0)), "the input is not changed"


def test_a_background_click_on_a_false_blob_removes_it() -> None:
    scores = ball_scores(radius=3.0)
    out = biased_scores(scores, [(0, CENTRE.tolist())])
    assert labels(scores).sum() > 50 and labels(out).sum() == 0


def test_clicks_the_network_already_honours_change_nothing() -> None:
    scores = ball_scores(radius=6.0)
    clicks = [(1, [24, 24, 24]), (0, [24, 24, 40]), (0, [2, 2, 2])]
    assert torch.equal(biased_scores(scores, clicks), scores)


def test_neighbouring_clicks_of_two_labels_both_get_theirs() -> None:
    scores = ball_scores(radius=6.0)
    outside, inside = [24, 24, 33], [24, 24, 28]  # a label click past the edge, a background one inside
    out = biased_scores(scores, [(1, outside), (0, inside)])
    assert labels(out)[tuple(outside)] == 1 and labels(out)[tuple(inside)] == 0


def test_clicks_at_the_volume_edge_and_probabilities() -> None:
    scores = ball_scores(radius=6.0)
    corner = [0, 0, SIZE - 1]
    assert labels(biased_scores(scores, [(1, corner)]))[tuple(corner)] == 1
    probabilities = torch.softmax(scores, 0)
    click = [24, 24, 32]
    out = biased_probabilities(probabilities, [(1, click)])
    assert labels(out)[tuple(click)] == 1
    # The same decision as biasing the logits: log-probabilities differ from them by a per-voxel constant.
    assert np.array_equal(labels(out), labels(biased_scores(scores, [(1, click)])))


def test_two_labels_clicked_on_one_voxel_end_with_the_last_click() -> None:
    scores = ball_scores(radius=6.0)
    click = [24, 24, 31]
    out = biased_scores(scores, [(1, click), (0, click)])
    assert torch.isfinite(out).all() and labels(out)[tuple(click)] == 0


def test_clicks_of_two_labels_a_few_voxels_apart_both_hold_where_the_network_is_sure() -> None:
    """Each bump undoes part of the other's work: the rounds go on until both clicks lead."""
    scores = ball_scores(radius=6.0, steepness=4.0)
    inside, outside = [24, 24, 26], [24, 24, 32]  # background 4 voxels deep, the ball 2 voxels out
    out = biased_scores(scores, [(0, inside), (1, outside)])
    for label, point in ((0, inside), (1, outside)):
        at = out[:, point[0], point[1], point[2]]
        assert float(at[label] - at[1 - label]) >= MARGIN - 1e-4
