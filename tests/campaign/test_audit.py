"""Audit picks: a share of next-sample answers at random, scored against their final labels by the
model of the moment. The estimate must be unbiased: (1) with the real sampler over a pool whose
per-study values are known, the 95 % interval covers the pool's mean about 95 % of the time, where
the same estimate from a strategy's picks does not; (2) end to end, the stored Dice of each audit study
is the Dice of the model's prediction (asked here through /infer) and the pool's mean lies in the
interval."""

from __future__ import annotations

import gzip
import random
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import requests
from scipy import stats
from sqlalchemy import update

from server.database import Database
from server.datastore.indexer import index_studies
from server.datastore.store import Datastore
from server.evidence import Evidence, _estimate
from server.models import Image
from server.registry import ModelRegistry
from server.sampling import Sampler
from strategies.registry import BUILTIN_STRATEGIES
from tests.conftest import AFFINE, Server, free_port
from tests.training.conftest import TEST_APP

POOL, PICKS, CAMPAIGNS = 240, 15, 80


def tiny_pool(folder: Path, n: int) -> None:
    data = gzip.compress(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)).to_bytes())
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"s{i:04d}.nii.gz").write_bytes(data)


def coverage(sampler: Sampler, db: Database, values: dict[str, float], strategy: str) -> float:
    truth = float(np.mean(list(values.values())))
    covered = 0
    for c in range(CAMPAIGNS):
        with db.session() as s:  # a fresh campaign: nothing leased
            s.execute(update(Image).values(lease_client=None, lease_expires=0.0, last_served_ts=0.0))
        picked = []
        for i in range(PICKS):
            reply = sampler.next_sample(BUILTIN_STRATEGIES_INSTANCES, strategy, {"client_id": f"c{c}-{i}"})
            picked.append(values[reply[0]["id"]])
        estimate = _estimate(0, [(v, 0) for v in picked])
        low, high = estimate["ci95"]
        covered += low <= truth <= high
    return covered / CAMPAIGNS


BUILTIN_STRATEGIES_INSTANCES = {name: BUILTIN_STRATEGIES[name]() for name in ("random", "first")}


def test_audit_estimate_covers_the_pool_mean(tmp_path: Path) -> None:
    studies = tmp_path / "pool"
    tiny_pool(studies, POOL)
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    index_studies(db, studies)
    datastore = Datastore(db, studies)
    rng = np.random.default_rng(7)
    ids = sorted(p.name.removesuffix(".nii.gz") for p in studies.glob("*.nii.gz"))
    # the model's (hidden) quality per study: worse on later studies, as on a second scanner
    values = {i: float(np.clip(0.9 - 0.5 * k / POOL + rng.normal(0, 0.1), 0, 1)) for k, i in enumerate(ids)}
    audit = Sampler(db, datastore, lease_seconds=600, audit_share=1.0)
    audit.rng = random.Random(11)
    by_strategy = Sampler(db, datastore, lease_seconds=600, audit_share=0.0)
    by_strategy.rng = random.Random(11)
    audited = coverage(audit, db, values, "first")  # every answer is an audit pick, whatever is asked
    first = coverage(by_strategy, db, values, "first")
    assert audited >= 0.88, audited  # nominal 0.95; 80 campaigns
    assert first < 0.2, first  # the strategy's own picks would say the model is better than it is
    db.dispose()


def sphere_study(folder: Path, seed: int) -> tuple[Path, np.ndarray]:
    from monai.data import create_test_image_3d

    image, seg = create_test_image_3d(
        32, 32, 32, num_objs=3, rad_max=8, rad_min=4, random_state=np.random.RandomState(seed)
    )
    path = folder / f"study_{seed:02d}.nii.gz"
    nib.save(nib.Nifti1Image((image * 1000 - 500).astype(np.int16), AFFINE), str(path))
    return path, (seg > 0).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def test_audit_end_to_end_with_the_real_model(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    studies.mkdir()
    truth = {}
    for seed in range(18):
        path, seg = sphere_study(studies, seed)
        truth[path.name.removesuffix(".nii.gz")] = seg
    srv = Server(
        studies, free_port(), args=["--app", str(TEST_APP)], env={"LABELLOOP_AUDIT_SHARE": "0"}
    ).start()

    def put(image: str) -> None:
        path = tmp_path / f"{image}-label.nii.gz"
        nib.save(nib.Nifti1Image(truth[image], AFFINE), str(path))
        with open(path, "rb") as f:
            assert requests.put(f"{srv.url}/datastore/label", params={"image": image}, files={"label": f}).ok

    try:
        u = srv.url
        for image in sorted(truth)[:4]:
            put(image)
        trained = requests.post(
            f"{u}/train/segmentation", params={"run_sync": "true"}, json={"max_epochs": 4}, timeout=600
        ).json()
        assert trained["status"] == "DONE", trained
        srv.env["LABELLOOP_AUDIT_SHARE"] = "1"
        srv.restart()
        audited = []
        for i in range(6):
            pick = requests.post(f"{u}/activelearning/random", json={"client_id": f"r{i}"}).json()
            assert pick["audit"] is True
            put(pick["id"])
            audited.append(pick["id"])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            evidence = requests.get(f"{u}/campaign/", timeout=10).json()["evidence"]
            if evidence["audit"] and evidence["audit"][0]["n"] == len(audited):
                break
            time.sleep(0.5)
        [estimate] = evidence["audit"]
        assert estimate["model_version"] == 1 and estimate["n"] == len(audited)

        def model_dice(image: str) -> float:
            reply = requests.post(
                f"{u}/infer/segmentation", params={"image": image, "output": "image"}, timeout=120
            )
            assert reply.status_code == 200
            path = tmp_path / f"{image}-pred.nii.gz"
            path.write_bytes(reply.content)
            return dice(np.asarray(nib.load(str(path)).dataobj) == 1, truth[image] == 1)

        per_study = [model_dice(i) for i in audited]
        assert abs(estimate["mean_dice"] - float(np.mean(per_study))) < 1e-3  # what was stored is that Dice
        remaining = [model_dice(i) for i in sorted(truth) if i not in audited and i not in sorted(truth)[:4]]
        pool_mean = float(np.mean(remaining))
        n, mean = estimate["n"], estimate["mean_dice"]
        half = stats.t.ppf(0.9995, n - 1) * float(np.std(per_study, ddof=1)) / np.sqrt(n)  # 99.9 %: no flakes
        assert mean - half - 1e-6 <= pool_mean <= mean + half + 1e-6, (mean, half, pool_mean)
    finally:
        srv.stop()


def test_an_audit_predicted_by_a_version_newer_than_its_label_is_dropped(tmp_path: Path) -> None:
    """A version published after the label was saved may have trained on it: its audit would flatter it.
    And a rest between audits ends at once when the server stops."""
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    registry = ModelRegistry(db, tmp_path / "data")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    evidence = Evidence(db, None, registry, None, "seg", {"organ": 1}, tmp_path)  # type: ignore[arg-type]
    first = registry.publish("seg", weights)
    saved = time.time()
    time.sleep(0.01)
    second = registry.publish("seg", weights)
    assert not evidence._published_after(0, saved)  # no weights yet: nothing can have trained
    assert not evidence._published_after(first.version, saved)
    assert evidence._published_after(second.version, saved)
    evidence.close()
    started = time.monotonic()
    evidence.closed.wait(30)
    assert time.monotonic() - started < 1
