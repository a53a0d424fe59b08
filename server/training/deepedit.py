"""DeepEdit training: the segmentation recipe with clicks simulated from the model's own errors.

As MONAI's ``monai.apps.deepedit.interaction.Interaction`` does it, with MONAI's DeepEdit transforms:

- every training crop starts with one seed click per label (``AddInitialSeedPointMissingLabelsd``:
  drawn inside the label, favouring voxels far from its edge);
- per step, with probability ``interaction_probability`` the network is run up to ``max_interactions``
  times on the batch and each time clicks are added where it is wrong
  (``FindDiscrepancyRegionsDeepEditd``, ``AddRandomGuidanceDeepEditd``), then the guidance channels are
  rebuilt (``AddGuidanceSignalDeepEditd``); otherwise the guidance is zeroed, so the same network also
  segments with no clicks at all;
- validation gives each label one click at its deepest voxel (:class:`CentreClicksd`): the Dice
  after the first click, deterministic and comparable across versions.

Beyond MONAI's recipe, ``click_loss`` (0, off, by default) weighs the clicked errors: the loss gains that
weight times the cross-entropy averaged over the regions the clicks on labels stand in and a band around
them (:func:`clicked_errors`). The idea: the segmentation loss averages over the whole crop, where an
error region one or two voxels thick around a click counts for almost nothing, so the network can learn
to ignore clicks at no cost. Measured on development studies (``benchmarks/interactive_probe.py
--question focus``) every version tried lost the automatic mode without raising the Dice after clicks,
so no app turns it on.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.apps.deepedit.transforms import (
    AddInitialSeedPointMissingLabelsd,
    AddRandomGuidanceDeepEditd,
    FindDiscrepancyRegionsDeepEditd,
)
from monai.transforms import Compose, MapTransform, Randomizable
from scipy import ndimage

from server.inference.click_consistency import region_at
from server.inference.clicks import BACKGROUND
from server.inference.deepedit import GUIDANCE_SIGMA, checked_sigma, guidance_channels, with_background
from server.training.base import TrainState
from server.training.config import BadTrainParams, TrainConfig, coerce_param
from server.training.segmentation import SegmentationTrainer

# MONAI logs every simulated click and every crop without a label at INFO.
logging.getLogger("monai.apps.deepedit.transforms").setLevel(logging.WARNING)

# Voxels around a clicked error region that its loss weighs too: without them the cheapest way to honour
# a click is to paint its label generously (measured on development studies: clicks taken, Dice lost).
CLICK_BAND = 2
# An upper bound on simulated click rounds per step: each round is one more forward pass of the batch.
MAX_INTERACTIONS = 50


class SeedClicksd(Randomizable, MapTransform):
    """One seed click per label present in the crop, as guidance channels after the image; the clicks
    themselves travel as JSON (``guidance``) for the interaction loop to add to."""

    def __init__(self, names: dict[str, int], sigma: float = GUIDANCE_SIGMA) -> None:
        MapTransform.__init__(self, ["image", "label"])
        self.names, self.sigma = names, sigma
        self.seed = AddInitialSeedPointMissingLabelsd(keys="label")

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Any:
        self.seed.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = np.asarray(d["label"])
        item: dict[Any, Any] = {
            "label": label,
            "label_names": self.names,
            "sids": {n: [] for n in self.names},
        }
        seeded: dict[Any, Any] = self.seed(item)
        guidance = {name: json.loads(seeded["guidance"][name]) for name in self.names}
        d["image"] = torch.from_numpy(guidance_channels(np.asarray(d["image"])[:1], guidance, self.sigma))
        d["guidance"] = json.dumps(guidance)
        return d


class CentreClicksd(MapTransform):
    """One click per label present, at its deepest voxel (farthest from its edge): the deterministic
    first click that validation measures the model with."""

    def __init__(self, names: dict[str, int], sigma: float = GUIDANCE_SIGMA) -> None:
        super().__init__(["image", "label"])
        self.names, self.sigma = names, sigma

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = np.asarray(d["label"])[0]
        guidance = {name: centre_click(label == value) for name, value in self.names.items()}
        d["image"] = torch.from_numpy(guidance_channels(np.asarray(d["image"])[:1], guidance, self.sigma))
        d["guidance"] = json.dumps(guidance)
        return d


def centre_click(mask: np.ndarray) -> list[list[int]]:
    """``[[i, j, k]]`` at the voxel of ``mask`` farthest from its edge; none when the mask is empty."""
    if not mask.any():
        return []
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    return [[int(v) for v in np.unravel_index(int(np.argmax(depth)), mask.shape)]]


def clicked_errors(
    truth: np.ndarray, pred: np.ndarray, clicks: dict[str, Any], names: dict[str, int]
) -> np.ndarray:
    """Where ``pred`` (3D labels) is wrong around the clicks, with a band of :data:`CLICK_BAND` voxels:
    for each click of a label (name to points ``[i, j, k]`` or MONAI's ``[d, i, j, k]``), the voxels
    connected to it that ``truth`` gives that label and ``pred`` does not, and those within the band
    around them (both sides of the boundary: painting past the truth costs there too), all within the
    consistency rule's reach. Empty around a click ``pred`` honours."""
    focus = np.zeros(truth.shape, dtype=bool)
    for name, points in clicks.items():
        missed = (truth == names[name]) & (pred != names[name])
        for point in points:
            found = region_at(missed, point[-3:])
            if found is not None:
                box, ball, region = found
                focus[box] |= ndimage.binary_dilation(region, iterations=CLICK_BAND) & ball
    return focus


def focused_cross_entropy(logits: torch.Tensor, label: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of ``logits`` (B, C, ...) against ``label`` (B, 1, ...), averaged over the voxels
    of ``focus`` (B, 1, ..., boolean); 0 when it is empty."""
    per_voxel = F.cross_entropy(logits.float(), label[:, 0].long(), reduction="none")
    where = focus[:, 0].to(per_voxel.dtype)
    return (per_voxel * where).sum() / where.sum().clamp(min=1.0)


def interaction_settings(values: Mapping[str, Any]) -> tuple[float, int]:
    """``values``' ``interaction_probability`` (in [0, 1]) and ``max_interactions`` (0 to
    :data:`MAX_INTERACTIONS`) in their wire forms, checked; :class:`BadTrainParams` names a wrong one."""
    probability = coerce_param("interaction_probability", "float", values["interaction_probability"])
    rounds = coerce_param("max_interactions", "int", values["max_interactions"])
    if not 0.0 <= probability <= 1.0:
        raise BadTrainParams("interaction_probability must be a number in [0, 1]")
    if not 0 <= rounds <= MAX_INTERACTIONS:
        raise BadTrainParams(f"max_interactions must be an integer from 0 to {MAX_INTERACTIONS}")
    return probability, rounds


class DeepEditTrainer(SegmentationTrainer):
    """``labels`` without ``background`` (added as 0); ``network_factory`` is the DeepEdit task's and
    ``guidance_sigma`` its ``sigma`` (the guidance Gaussian's width, in voxels); ``click_loss`` the weight
    of the cross-entropy on the clicked errors (0: MONAI's recipe)."""

    def __init__(
        self,
        model: str | None = None,
        description: str = "DeepEdit: U-Net on image and click guidance, clicks simulated from errors",
        *,
        labels: dict[str, int],
        interaction_probability: float = 0.5,
        max_interactions: int = 3,
        guidance_sigma: float = GUIDANCE_SIGMA,
        click_loss: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.names = with_background(labels)
        self.guidance_sigma = checked_sigma(guidance_sigma)
        if not 0 <= click_loss < float("inf"):
            raise ValueError(f"the click loss weight must be 0 or more, not {click_loss}")
        self.click_loss = float(click_loss)
        self.interaction_probability, self.max_interactions = interaction_settings(
            {"interaction_probability": interaction_probability, "max_interactions": max_interactions}
        )
        self.add_clicks = AddRandomGuidanceDeepEditd(keys="NA")
        self.discrepancy = FindDiscrepancyRegionsDeepEditd(keys="label")
        kwargs.setdefault("semi_supervised", {"enabled": False})
        super().__init__(model, description, labels=self.names, **kwargs)

    def train_transforms(self) -> Compose:
        return Compose([*super().train_transforms().transforms, SeedClicksd(self.names, self.guidance_sigma)])

    def val_transforms(self) -> Compose:
        return Compose([*self.load_transforms(), CentreClicksd(self.names, self.guidance_sigma)])

    def check_params(self, params: dict[str, Any]) -> TrainConfig:
        """The common parameters, and this trainer's ``interaction_probability`` and ``max_interactions``
        (shown in ``/info/``, so a client may send them back changed)."""
        cfg = super().check_params(params)
        self.interactions(params)
        return cfg

    def interactions(self, params: Mapping[str, Any]) -> tuple[float, int]:
        """``(interaction_probability, max_interactions)``: the request's, else this trainer's."""
        defaults = {
            "interaction_probability": self.interaction_probability,
            "max_interactions": self.max_interactions,
        }
        return interaction_settings({**defaults, **{k: params[k] for k in defaults if k in params}})

    def train_step(self, state: TrainState, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        probability, rounds = self.interactions(state.ctx.params)
        if random.random() < probability:
            for j in range(rounds):
                batch = self.interact(state, batch, 1.0 - j / rounds)
        else:
            batch = dict(batch)
            image = batch["image"].clone()
            image[:, 1:] = 0
            batch["image"] = image
        return super().train_step(state, batch)

    def step_loss(
        self,
        state: TrainState,
        batch: dict[str, Any],
        image: torch.Tensor,
        label: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        """The objective's loss, plus ``click_loss`` times the cross-entropy on the clicked errors of the
        last simulated round (none in a step without clicks)."""
        focus = batch.get("focus")
        if focus is None or self.click_loss == 0:
            return super().step_loss(state, batch, image, label, progress)
        outputs: list[torch.Tensor] = []

        def forward(x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = state.model(x)
            outputs.append(out)
            return out

        loss = state.objective.loss(forward, state.loss_fn, image, label, progress)
        logits = outputs[0][: image.shape[0]]  # the labelled batch comes first (semi-supervised too)
        return loss + self.click_loss * focused_cross_entropy(logits, label, focus.to(label.device))

    def interact(self, state: TrainState, batch: dict[str, Any], probability: float) -> dict[str, Any]:
        """One simulated round: predict, add clicks where the prediction is wrong, rebuild the guidance;
        ``focus``: the errors of this prediction around the clicks on labels (:func:`clicked_errors`;
        weighing the false positives of background clicks too was tried first, see the probe)."""
        image = batch["image"].to(state.device)
        state.model.eval()
        with torch.no_grad(), torch.autocast(device_type=state.device.type, enabled=state.use_amp):
            pred = state.model(image).argmax(dim=1, keepdim=True).cpu().numpy()
        self.train_mode(state.model)
        images, guidance, focus = [], [], []
        for b in range(image.shape[0]):
            item: dict[Any, Any] = {
                "label": batch["label"][b].cpu().numpy(),
                "pred": pred[b],
                "label_names": self.names,
                "guidance": json.loads(batch["guidance"][b]),
                "probability": probability,
            }
            added: dict[Any, Any] = self.add_clicks(self.discrepancy(item))
            clicks = {
                n: [[int(v) for v in p] for p in added["guidance"].get(n, []) if p is not None]
                for n in self.names
            }
            signal = guidance_channels(image[b, :1].cpu().numpy(), clicks, self.guidance_sigma)
            images.append(torch.from_numpy(signal))
            guidance.append(json.dumps(clicks))
            if self.click_loss:
                truth = np.asarray(item["label"])[0]
                on_labels = {n: points for n, points in clicks.items() if n != BACKGROUND}
                focus.append(torch.from_numpy(clicked_errors(truth, pred[b][0], on_labels, self.names))[None])
        out = {**batch, "image": torch.stack(images), "guidance": guidance}
        return {**out, "focus": torch.stack(focus)} if focus else out

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["interaction_probability"] = self.interaction_probability
        cfg["max_interactions"] = self.max_interactions
        cfg["guidance_sigma"] = self.guidance_sigma
        cfg["click_loss"] = self.click_loss
        return cfg
