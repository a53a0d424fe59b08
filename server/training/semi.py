"""Semi-supervised building blocks: an EMA teacher, a weight ramp-up, confidence masks, the unlabelled loss.

Pure functions (and one small object that holds a run's teacher), shared by the trainers
(:class:`server.training.base.Trainer` with ``semi_supervised.enabled``) and by
``benchmarks/pseudo_label.py``, so the benchmark measures the code that ships.

Two methods, one recipe: a teacher predicts the clean view of an unlabelled batch, the student the same
batch perturbed (one forward pass together with the labelled batch, so DDP and batch norm see one step),
and the student is pulled towards the teacher where the teacher is confident. The perturbation is
Gaussian noise (``perturbation="noise"``), a FixMatch-style strong view (``"strong"``: MONAI intensity
transforms and CutMix) or BCP's bidirectional copy-paste with the labelled batch (``"copy_paste"``:
targets and weights mixed with the true labels), all in :mod:`server.training.perturb`.

- ``pseudo_label``: hard pseudo-labels (the teacher's argmax), cross-entropy on confident voxels;
- ``mean_teacher``: soft consistency, the squared distance between the two probability maps.

The teacher is an exponential moving average of the student (``ema`` 0.99: Mean Teacher, Tarvainen &
Valpola 2017). ``ema`` 1.0 never moves it: the teacher stays the model version the run started from (a
round-based teacher/student where each published version teaches the next run). The loss on the
unlabelled batch is normalised by every voxel (FixMatch), so a teacher that is confident nowhere adds
nothing, and its weight ramps up along ``exp(-5 (1 - t)^2)`` (Laine & Aila 2017).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from server.training.config import METHODS, PERTURBATIONS
from server.training.perturb import CopyPaste, StrongView

Forward = Callable[[Tensor], Tensor]  # a network (or its DDP wrapper) as the step calls it
LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits, target) -> loss


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` in eval mode (no gradients; its batch norm uses running statistics)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int | None = None) -> float:
    """``teacher <- a * teacher + (1 - a) * student``; returns ``a``.

    With ``step`` (the number of optimiser steps so far, from 1) ``a`` is ``min(decay, 1 - 1 / (step + 1))``,
    so the first steps follow the student closely instead of averaging in the random initialisation.
    ``decay`` >= 1 leaves the teacher as it is. Floating-point buffers (batch norm running statistics)
    are averaged the same way; integer buffers (``num_batches_tracked``) are copied.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema decay must be in [0, 1], got {decay}")
    if decay >= 1.0:
        return 1.0
    a = decay if step is None else min(decay, 1.0 - 1.0 / (step + 1))
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(a).add_(s.detach(), alpha=1.0 - a)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        if tb.is_floating_point():
            tb.mul_(a).add_(sb.detach(), alpha=1.0 - a)
        else:
            tb.copy_(sb)
    return a


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = current / length`` clipped to [0, 1]; 1.0 when ``length`` <= 0."""
    if length <= 0:
        return 1.0
    t = min(max(current / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def confidence_mask(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """1.0 where the teacher's top class probability reaches ``threshold``, else 0.0.

    ``probs`` is ``(B, C, *spatial)`` (segmentation) or ``(B, C)`` (classification); the mask drops the
    class axis: ``(B, *spatial)`` or ``(B,)``. ``threshold`` <= 0 keeps everything (no masking).
    """
    top = probs.max(dim=1).values
    if threshold <= 0:
        return torch.ones_like(top)
    return (top >= threshold).to(probs.dtype)


def pseudo_label_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor, method: str
) -> torch.Tensor:
    """The unlabelled loss, summed over the masked voxels and divided by all of them.

    ``pseudo_label``: cross-entropy against the teacher's argmax; ``mean_teacher``: the squared distance
    between the student's and the teacher's class probabilities (summed over classes).
    """
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student {list(student_logits.shape)} vs teacher {list(teacher_probs.shape)}")
    if method == "pseudo_label":
        per_voxel = F.cross_entropy(student_logits.float(), teacher_probs.argmax(dim=1), reduction="none")
    elif method == "mean_teacher":
        per_voxel = (torch.softmax(student_logits.float(), dim=1) - teacher_probs.float()).pow(2).sum(dim=1)
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return (per_voxel * mask.to(per_voxel.dtype)).sum() / max(1, per_voxel.numel())


@torch.no_grad()
def teacher_probabilities(teacher: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Softmax of the teacher's logits over the class axis."""
    return torch.softmax(teacher(image).float(), dim=1)


def add_noise(image: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The student's view: ``image`` plus Gaussian noise of ``std`` (none when ``std`` <= 0)."""
    if std <= 0:
        return image
    if generator is None:
        return image + std * torch.randn_like(image)
    noise = torch.randn(image.shape, generator=generator, dtype=image.dtype, device=generator.device)
    return image + std * noise.to(image.device)


def one_hot_labels(label: torch.Tensor, classes: int) -> torch.Tensor:
    """``(B, 1, *spatial)`` class indices as ``(B, classes, *spatial)`` one-hot floats."""
    if label.dim() < 3 or label.shape[1] != 1:
        raise ValueError(f"expected segmentation labels (B, 1, *spatial), got {list(label.shape)}")
    return F.one_hot(label[:, 0].long(), classes).movedim(-1, 1).float()


class SemiSupervision:
    """One run's teacher and unlabelled batches; the trainer calls :meth:`loss` and :meth:`after_step`.

    ``batches`` yields unlabelled input tensors (already on the device) forever. ``rampup`` is in the same
    unit as the ``progress`` handed to :meth:`loss` (epochs for the trainers, iterations in the benchmark).
    """

    def __init__(
        self,
        student: nn.Module,
        batches: Iterator[torch.Tensor],
        *,
        method: str = "mean_teacher",
        threshold: float = 0.9,
        weight: float = 1.0,
        rampup: float = 5.0,
        ema: float = 0.99,
        noise: float = 0.1,
        perturbation: str = "noise",
        generator: torch.Generator | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}")
        self.teacher = make_teacher(student)
        self.batches = batches
        self.method, self.threshold, self.weight = method, threshold, weight
        self.rampup, self.ema, self.noise = rampup, ema, noise
        self.generator = generator
        self.strong: StrongView | None = None
        self.copy_paste: CopyPaste | None = None
        if perturbation != "noise":
            device = generator.device if generator is not None else None
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=device))
            if perturbation == "strong":
                self.strong = StrongView(seed)
            else:
                self.copy_paste = CopyPaste(seed)
        self.steps = 0
        self.stats: dict[str, float] = {}
        self._confident = torch.zeros(())
        self._unlabelled_loss = torch.zeros(())
        self._count = 0

    def loss(self, model: Forward, loss_fn: LossFn, image: Tensor, label: Tensor, progress: float) -> Tensor:
        """Supervised loss on ``(image, label)`` plus the ramped, masked unlabelled loss (one forward)."""
        unlabelled = next(self.batches)
        probs = teacher_probabilities(self.teacher, unlabelled)
        mask = confidence_mask(probs, self.threshold)
        confident = mask.detach().float().mean()
        if self.strong is not None:
            view, probs, mask = self.strong(unlabelled, probs, mask)  # targets follow the CutMix
        elif self.copy_paste is not None:  # mask becomes per-voxel weights: 1 labelled, 1/2 x mask teacher
            onehot = one_hot_labels(label, probs.shape[1])
            view, probs, mask = self.copy_paste(image, onehot, unlabelled, probs, mask)
        else:
            view = add_noise(unlabelled, self.noise, self.generator)
        logits = model(torch.cat([image, view]))
        n = image.shape[0]
        supervised = loss_fn(logits[:n], label)
        term = pseudo_label_loss(logits[n:], probs, mask, self.method)
        weight = self.weight * sigmoid_rampup(progress, self.rampup)
        self.stats["weight"] = weight
        self._confident = self._confident.to(confident.device) + confident
        self._unlabelled_loss = self._unlabelled_loss.to(term.device) + term.detach().float()
        self._count += 1
        return supervised + weight * term

    def after_step(self, student: nn.Module) -> None:
        """After the optimiser step: the EMA teacher follows the student."""
        self.steps += 1
        ema_update(self.teacher, student, self.ema, self.steps)

    def epoch_stats(self) -> dict[str, Any]:
        """Means since the last call (one host sync per epoch): confident share, unlabelled loss, weight."""
        n = max(1, self._count)
        out = {
            "confident_fraction": round(float(self._confident) / n, 4),
            "unlabelled_loss": round(float(self._unlabelled_loss) / n, 5),
            "weight": round(self.stats.get("weight", 0.0), 4),
        }
        self._confident, self._unlabelled_loss, self._count = torch.zeros(()), torch.zeros(()), 0
        return out


def cycle(loader: Any, take: Callable[[Any], torch.Tensor]) -> Iterator[torch.Tensor]:
    """Endless unlabelled input tensors ``take(batch)`` from ``loader`` (re-iterated, so reshuffled, when
    it runs out)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield take(batch)
        if empty:
            raise ValueError("the unlabelled loader is empty")
