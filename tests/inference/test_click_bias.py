"""The click bias: each click's label raised around it until it leads there, and nothing else moved."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from server.inference.click_bias import MARGIN, TRUNCATE, WIDTH, biased_probabilities, biased_scores
from server.inference.deepedit import DeepEditTask
from server.inference.request import InferRequest
from server.inference.segmentation import SegmentationConfig

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


@pytest.mark.parametrize(("width", "margin"), [(2.0, 1.0), (4.0, 3.0)])
def test_a_model_s_own_width_and_margin_shape_the_bump(width: float, margin: float) -> None:
    """A task's ``bias_width`` and ``bias_margin`` reach ``biased_scores``: the clicked label leads by the
    margin, and nothing moves beyond the narrower bump's support."""
    scores = ball_scores(radius=6.0)
    click = [24, 24, 32]
    out = biased_scores(scores, [(1, click)], width=width, margin=margin)
    at = out[:, 24, 24, 32]
    assert float(at[1] - at[0]) == pytest.approx(margin, abs=1e-4)
    reach = int(TRUNCATE * width)
    far = np.ones(scores.shape[1:], bool)
    far[tuple(slice(max(c - reach, 0), c + reach + 1) for c in click)] = False
    assert torch.equal(out[:, far], scores[:, far])
    if width < WIDTH:  # the default bump reaches voxels this one leaves alone
        assert not torch.equal(biased_scores(scores, [(1, click)])[:, far], scores[:, far])


@pytest.mark.parametrize(("width", "margin"), [(0.0, 1.0), (-1.0, 1.0), (4.0, -0.5), (float("nan"), 1.0)])
def test_a_deepedit_task_refuses_a_bias_it_cannot_draw(width: float, margin: float) -> None:
    with pytest.raises(ValueError, match="click bias"):
        DeepEditTask({"lesion": 1}, bias_width=width, bias_margin=margin)


def test_a_deepedit_call_biases_with_its_task_s_width_and_margin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import server.inference.deepedit as deepedit

    seen: list[tuple[float, float]] = []

    def spy(scores: torch.Tensor, clicks: object, width: float, margin: float) -> torch.Tensor:
        seen.append((width, margin))
        return scores

    monkeypatch.setattr(deepedit, "biased_scores", spy)
    config = SegmentationConfig(preset="mr", spacing=None, roi_size=(16, 16, 16))
    task = DeepEditTask({"lesion": 1}, config, bias_width=2.5, bias_margin=0.5)
    image = tmp_path / "study.nii.gz"
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32), np.eye(4)),
        str(image),
    )
    request = InferRequest(
        "deepedit", image, ".nii.gz", tmp_path, {"lesion": [[8, 8, 8]], "click_bias": True}
    )
    task.run(request, [task.network().eval()], torch.device("cpu"))
    assert seen == [(2.5, 0.5)]
