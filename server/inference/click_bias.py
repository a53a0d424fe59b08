"""Click bias: every click gets the label it asked for, by moving the network's own decision near it.

A DeepEdit network reads clicks as guidance channels and may still ignore one: the clicked voxel keeps
another label, and the annotator clicks the same spot again to no effect. On ``interactive.py``'s
development studies most ignored clicks sit in error regions one or two voxels thick: a lesion or a
vessel the network drew a shell too small or too large, whose scores change from one label to the
other just short of the truth.

After the network has predicted, for each click whose label does not lead at its voxel by
:data:`MARGIN`, that label's score channel is raised by a Gaussian bump centred on the click (sigma
:data:`WIDTH` voxels), just high enough that it does. The boundary moves out to the click and past it
wherever the network's scores are as close as they are at the click, so the shell the click stands in
follows it; where the network is sure, nothing moves, and nothing changes beyond the bump's support
(4 sigma, 16 voxels). Clicks are taken in order; a later bump can undo part of an earlier one's work
where the two meet, so the clicks go round again until every one leads, up to :data:`PASSES` times.

The scores are logits (one network); an ensemble's mean probabilities are biased in log space.
Measured before it was offered, on ``interactive.py``'s development studies (the lesions and vessels of
seeds 2000-2005, its 10-click protocol, the 40-epoch DeepEdit model): Dice after 1, 3, 5 and 10
clicks 0.699 / 0.798 / 0.835 / 0.871 against the network's 0.672 / 0.744 / 0.736 / 0.752, where the
image rule of :mod:`server.inference.click_consistency` gives 0.705 / 0.746 / 0.599 / 0.404
(``interactive_probe.py --question refine``); no measurable time per call. The settings below are the
first ones tried (a wider bump or a larger margin measured no better). Its registered run on the test
studies (``benchmarks/results/interactive_bias.json``) is why it is on by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

WIDTH = 4.0  # voxels: a third of the 12-voxel reach of MONAI's default guidance (sigma 3, 4 sigma)
MARGIN = 1.0  # score units (logits): the clicked label leads the runner-up by this at the click
# Rounds over the clicks, until every click leads: a bump can undo part of another's work where two
# clicks of different labels are a few voxels apart, and they settle in a few rounds (each leaves a
# fraction of the last one's deficit). Two labels clicked on one voxel never settle; the later one wins.
PASSES = 50
TRUNCATE = 4.0  # the bump's support, in sigmas


def biased_scores(
    scores: torch.Tensor,
    clicks: Sequence[tuple[int, Sequence[int]]],
    width: float = WIDTH,
    margin: float = MARGIN,
) -> torch.Tensor:
    """``scores`` (C, X, Y, Z) logits, with each click's label raised around it until it leads there by
    ``margin`` (a bump of sigma ``width`` voxels).

    ``clicks``: ``(channel, [i, j, k])`` in the order they were made, on the scores' grid. Returns a
    new tensor; ``scores`` is not changed."""
    out = scores.clone()
    shape = out.shape[1:]
    for _ in range(PASSES):
        raised = False
        for label, point in clicks:
            i, j, k = (int(v) for v in point)
            at = out[:, i, j, k]
            rival = torch.cat([at[:label], at[label + 1 :]]).max()
            need = float(rival - at[label]) + margin
            if need <= 0:
                continue
            box, bump = gaussian_bump(shape, point, width)
            out[label][box] += need * bump
            raised = True
        if not raised:
            break
    return out


def biased_probabilities(
    probabilities: torch.Tensor,
    clicks: Sequence[tuple[int, Sequence[int]]],
    width: float = WIDTH,
    margin: float = MARGIN,
) -> torch.Tensor:
    """:func:`biased_scores` for (C, X, Y, Z) probabilities (an ensemble's mean): biased as logs, so the
    margin means the same odds; returns the biased log probabilities' exponent (same argmax)."""
    return torch.exp(biased_scores(torch.log(probabilities.clamp_min(1e-6)), clicks, width, margin))


def gaussian_bump(
    shape: Sequence[int], point: Sequence[int], width: float = WIDTH
) -> tuple[tuple[slice, ...], torch.Tensor]:
    """The box of a volume of ``shape`` within the bump's support around ``point``, and the bump there
    (1 at the point, sigma ``width`` voxels)."""
    reach = int(TRUNCATE * width)
    box, axes = [], []
    for c, n in zip((int(v) for v in point), (int(v) for v in shape), strict=True):
        lo, hi = max(c - reach, 0), min(c + reach + 1, n)
        box.append(slice(lo, hi))
        axes.append(torch.exp(-((torch.arange(lo, hi, dtype=torch.float32) - c) ** 2) / (2 * width**2)))
    bump = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return tuple(box), bump
