"""DeepEdit's simulated click rounds: a training request's ``max_interactions`` and
``interaction_probability`` (what ``/info/`` shows of the trainer) are checked and honoured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from server.inference.deepedit import DeepEditTask
from server.inference.segmentation import SegmentationConfig
from server.training.base import TrainContext
from server.training.config import BadTrainParams
from server.training.deepedit import MAX_INTERACTIONS, DeepEditTrainer, interaction_settings

SIZE = 24


def trainer(**kwargs: Any) -> DeepEditTrainer:
    task = DeepEditTask({"lesion": 1}, SegmentationConfig(preset="mr", spacing=None, roi_size=(SIZE,) * 3))
    return DeepEditTrainer(
        labels={"lesion": 1}, network_factory=task.network, roi_size=(SIZE,) * 3, spacing=None, **kwargs
    )


def studies(folder: Path, n: int = 4) -> list[dict[str, str]]:
    grid = np.mgrid[:SIZE, :SIZE, :SIZE]
    items = []
    for i in range(n):
        image = np.random.default_rng(i).normal(0, 0.1, (SIZE,) * 3).astype(np.float32)
        label = (((grid - SIZE // 2) ** 2).sum(0) <= 25).astype(np.uint8)
        image[label == 1] += 1.0
        item = {}
        for kind, data in (("image", image), ("label", label)):
            path = folder / f"{kind}{i}.nii.gz"
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
            item[kind] = str(path)
        items.append(item)
    return items


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"interaction_probability": 0.5, "max_interactions": 10}, (0.5, 10)),
        ({"interaction_probability": "1", "max_interactions": ["20"]}, (1.0, 20)),  # form and list forms
        ({"interaction_probability": 0, "max_interactions": 0}, (0.0, 0)),
    ],
)
def test_interaction_settings_read_the_wire_forms(
    values: dict[str, Any], expected: tuple[float, int]
) -> None:
    assert interaction_settings(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        {"interaction_probability": 1.5, "max_interactions": 3},
        {"interaction_probability": "often", "max_interactions": 3},
        {"interaction_probability": 0.5, "max_interactions": -1},
        {"interaction_probability": 0.5, "max_interactions": 2.5},
        {"interaction_probability": 0.5, "max_interactions": MAX_INTERACTIONS + 1},
        {"interaction_probability": 0.5, "max_interactions": True},
    ],
)
def test_wrong_interaction_settings_are_refused_by_name(values: dict[str, Any]) -> None:
    with pytest.raises(BadTrainParams, match="interaction"):
        interaction_settings(values)
    with pytest.raises(BadTrainParams, match="interaction"):
        trainer().check_params(values)
    with pytest.raises(ValueError, match="interaction"):  # and an app declaring them fails at load
        trainer(**values)


@pytest.mark.parametrize("rounds", [0, 2])
def test_a_run_simulates_the_rounds_its_request_asks_for(
    rounds: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A short real run whose request overrides the trainer's 3 rounds: every step (probability 1) runs
    exactly that many simulated rounds, each with its round's click probability."""
    made: list[float] = []
    interact = DeepEditTrainer.interact

    def spy(self: DeepEditTrainer, state: Any, batch: dict[str, Any], probability: float) -> dict[str, Any]:
        made.append(probability)
        return interact(self, state, batch, probability)

    monkeypatch.setattr(DeepEditTrainer, "interact", spy)
    items = studies(tmp_path)
    result = trainer(max_interactions=3, interaction_probability=0.0).run(
        TrainContext(
            datalist=items,
            output_dir=tmp_path / "out",
            params={
                "max_epochs": 1,
                "early_stop_patience": -1,
                "max_interactions": rounds,
                "interaction_probability": 1,
            },
            validation=[items[-1]["image"]],
        )
    )
    assert result.best_checkpoint is not None
    steps = len(items) - 1  # the last study validates
    assert made == [1.0 - j / rounds for _ in range(steps) for j in range(rounds)]
