"""Interactive segmentation end to end: a DeepEdit model trained by a background job, then the 3D Slicer
module's SmartEdit call replayed through the real ``monailabel`` client.

Each study holds two identical blobs and its label is one of them, picked at random: no image feature
tells which, so only the clicks can. A model that ignores its clicks cannot pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from tests.conftest import Server, free_port
from tests.training.conftest import save_label, wait_for

SIZE = 32
RADIUS = 5
STUDIES = 10
APP_CONF = {
    "labels": "blob",
    "interactive": "true",
    "preset": "mr",
    "spacing": "native",
    "roi_size": str(SIZE),
}


def two_blobs(seed: int) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """A volume with two identical bright balls, the label of the first one, and both centres."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[:SIZE, :SIZE, :SIZE]
    image = rng.normal(0.0, 0.1, (SIZE, SIZE, SIZE))
    label = np.zeros((SIZE, SIZE, SIZE), np.uint8)
    centres: list[list[int]] = []
    while len(centres) < 2:
        c = rng.integers(RADIUS + 3, SIZE - RADIUS - 3, 3)
        if all(np.linalg.norm(c - np.asarray(o)) > 2 * RADIUS + 4 for o in centres):
            centres.append([int(v) for v in c])
    for k, c in enumerate(centres):
        ball = ((grid - np.asarray(c)[:, None, None, None]) ** 2).sum(0) <= RADIUS**2
        image[ball] += 1.0
        if k == 0:
            label[ball] = 1
    return image.astype(np.float32), label, centres


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, list[list[int]]]]]:
    """A server whose ``deepedit`` model a training job taught to follow clicks; the studies' centres."""
    root = tmp_path_factory.mktemp("interactive")
    studies, labels = root / "studies", root / "labels"
    studies.mkdir()
    labels.mkdir()
    centres: dict[str, list[list[int]]] = {}
    affine = np.diag([1.2, 0.9, 1.5, 1.0])  # not identity: clicks must travel through the affines
    for i in range(STUDIES + 1):
        image, label, both = two_blobs(i)
        name = f"blobs_{i:02d}"
        nib.save(nib.Nifti1Image(image, affine), str(studies / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(labels / f"{name}.nii.gz"))
        centres[name] = both
    conf = [arg for key, value in APP_CONF.items() for arg in ("--conf", key, value)]
    srv = Server(studies, free_port(), args=conf).start()
    try:
        for i in range(STUDIES):  # the last study stays unlabelled: it is the one clicked on
            save_label(srv.url, f"blobs_{i:02d}", labels / f"blobs_{i:02d}.nii.gz")
        job = requests.post(
            f"{srv.url}/train/deepedit",
            json={"max_epochs": 30, "early_stop_patience": -1, "learning_rate": 0.003, "val_split": 0.2},
            timeout=10,
        ).json()
        done = wait_for(srv.url, job["id"], ("DONE", "ERROR", "STOPPED"), timeout=600)
        assert done["status"] == "DONE", done
        yield srv, centres
    finally:
        srv.stop()


def slicer_params(info: dict[str, Any], model: str, points: dict[str, list[list[int]]], label: str) -> dict:
    """``onClickDeepgrow`` in multi-label mode (a ``deepedit`` model with labels): one list per app label
    (each segment's ForegroundPoints; background clicks are the ``background`` segment's), the current
    segment as ``label``, then ``getParamsFromConfig("infer", model)``."""
    params: dict[str, Any] = {name: points.get(name, []) for name in info.get("labels", [])}
    params["label"] = label
    config = info["models"][model].get("config", {})
    params.update({k: v[0] if isinstance(v, list) else v for k, v in config.items()})
    return params


def test_info_lists_a_deepedit_model_the_plugins_offer(trained: tuple[Server, Any]) -> None:
    srv, _ = trained
    info = requests.get(f"{srv.url}/info/", timeout=10).json()
    model = info["models"]["deepedit"]
    # What Slicer's SmartEdit selector and OHIF's Point Prompts filter on: type, labels, dimension.
    assert model["type"] == "deepedit" and model["dimension"] == 3
    assert model["labels"] == {"background": 0, "blob": 1}
    assert "background" in info["labels"] and "blob" in info["labels"]
    assert model["version"] >= 1  # the training job published a version
    assert model["interactive"]["click_bias"] is True  # each click's label raised around it by default
    assert info["models"]["segmentation"]["type"] == "segmentation"  # the automatic model stays


def test_slicer_smartedit_clicks_steer_the_mask(trained: tuple[Server, Any], tmp_path: Path) -> None:
    srv, centres = trained
    info = requests.get(f"{srv.url}/info/", timeout=10).json()
    client = MONAILabelClient(srv.url, tmpdir=str(tmp_path), client_id="annotator-7")
    study = f"blobs_{STUDIES:02d}"
    first, second = centres[study]

    def mask(points: dict[str, list[list[int]]]) -> np.ndarray:
        result, params = client.infer("deepedit", study, slicer_params(info, "deepedit", points, "blob"))
        assert params["clicks"] == sum(len(p) for p in points.values())
        return np.asarray(nib.load(result).dataobj)

    one = mask({"blob": [first], "background": [second]})
    assert one[tuple(first)] == 1, "the foreground click is outside the mask"
    assert one[tuple(second)] == 0, "the background click is inside the mask"
    # The network itself reads the clicks; the consistency rule (off by default) keeps them too.
    rule = client.infer(
        "deepedit",
        study,
        {
            **slicer_params(info, "deepedit", {"blob": [first], "background": [second]}, "blob"),
            "click_consistency": True,
        },
    )[0]
    rule_mask = np.asarray(nib.load(rule).dataobj)
    assert rule_mask[tuple(first)] == 1 and rule_mask[tuple(second)] == 0

    # One more click, on the other ball: the mask now covers it, and changed around the click.
    two = mask({"blob": [first, second], "background": []})
    assert two[tuple(first)] == 1 and two[tuple(second)] == 1
    near = tuple(slice(c - 2, c + 3) for c in second)
    assert (two[near] != one[near]).sum() >= 50, "the new click changed nothing where it is"

    # The DeepGrow form (OHIF for non-DeepEdit models, Slicer's single-label mode) means the same.
    grow = client.infer("deepedit", study, {"label": "blob", "foreground": [first], "background": [second]})[
        0
    ]
    assert np.array_equal(np.asarray(nib.load(grow).dataobj), one)

    # The clicks are kept with who gave them and the model version, then linked to the label saved.
    records = requests.get(f"{srv.url}/datastore/clicks", params={"image": study}, timeout=10).json()
    assert [r["count"] for r in records] == [2, 2, 2, 2]
    assert {r["author"] for r in records} == {"annotator-7"}
    assert {r["model_version"] for r in records} == {info["models"]["deepedit"]["version"]}
    assert records[2]["points"] == {"blob": [first, second]} and records[0]["label"] == "blob"
    assert all(r["label_version"] is None for r in records)
    out = tmp_path / "final.nii.gz"
    nib.save(nib.Nifti1Image(two.astype(np.uint8), nib.load(grow).affine), str(out))
    client.save_label(study, str(out), tag="final")
    records = requests.get(f"{srv.url}/datastore/clicks", params={"image": study}, timeout=10).json()
    assert {(r["label_tag"], r["label_version"]) for r in records} == {("final", 1)}
    label_info = requests.get(
        f"{srv.url}/datastore/label/info", params={"label": study, "tag": "final"}, timeout=10
    ).json()
    assert label_info["clicks"] == 8


def test_the_click_bias_gives_an_ignored_click_its_label_around_it_only(
    trained: tuple[Server, Any], tmp_path: Path
) -> None:
    srv, centres = trained
    info = requests.get(f"{srv.url}/info/", timeout=10).json()
    client = MONAILabelClient(srv.url, tmpdir=str(tmp_path))
    study = f"blobs_{STUDIES:02d}"
    first, _ = centres[study]
    corner = [1, 1, 1]  # flat background, 7 voxels or more from either ball: nothing there to segment
    sent = slicer_params(info, "deepedit", {"blob": [first, corner]}, "blob")

    def mask(bias: bool) -> np.ndarray:
        return np.asarray(nib.load(client.infer("deepedit", study, {**sent, "click_bias": bias})[0]).dataobj)

    network, biased = mask(False), mask(True)
    assert network[tuple(corner)] == 0, "the network alone took the click: nothing left to test"
    assert biased[tuple(corner)] == 1 and biased[tuple(first)] == 1
    moved = np.argwhere(network != biased)
    assert np.abs(moved - np.asarray(corner)).max() <= 16, "the bias changed voxels beyond its bump"
    assert np.array_equal(mask(True), biased)  # the default is on, and the same call gives the same mask
    assert np.array_equal(np.asarray(nib.load(client.infer("deepedit", study, sent)[0]).dataobj), biased)


@pytest.mark.parametrize(
    "params",
    [
        {"blob": [[SIZE, 0, 0]]},  # outside the image
        {"blob": [[1, 2]]},
        {"blob": "centre"},
        {"foreground": [[1, 2, 3]], "label": "liver"},  # not a label of the model
        {"blob": [[1, 2, True]]},
        {"blob": [[1, 2, 3]], "click_consistency": "maybe"},
        {"blob": [[1, 2, 3]], "click_bias": "sometimes"},
    ],
)
def test_bad_clicks_are_a_400(trained: tuple[Server, Any], params: dict[str, Any]) -> None:
    srv, _ = trained
    r = requests.post(
        f"{srv.url}/infer/deepedit",
        params={"image": f"blobs_{STUDIES:02d}", "output": "json"},
        data={"params": json.dumps(params)},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize(
    "params", [{"max_interactions": -1}, {"max_interactions": "many"}, {"interaction_probability": 2}]
)
def test_bad_simulated_click_settings_in_a_train_request_are_a_422(
    trained: tuple[Server, Any], params: dict[str, Any]
) -> None:
    """``/info/`` shows the DeepEdit trainer's ``max_interactions`` and ``interaction_probability``, which
    Slicer's training options send back edited: a wrong one is refused, as every bad training parameter
    is, before any job starts."""
    srv, _ = trained
    before = requests.get(f"{srv.url}/train/", timeout=10).json()
    r = requests.post(f"{srv.url}/train/deepedit", json={"max_epochs": 1, **params}, timeout=10)
    assert r.status_code == 422, r.text
    assert "interaction" in r.json()["detail"]
    assert requests.get(f"{srv.url}/train/", timeout=10).json() == before
