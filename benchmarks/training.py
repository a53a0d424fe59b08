"""Training throughput: samples/s and time per epoch for 64^3 volumes on the current device.

Runs the segmentation app's own recipe (its U-Net, DiceCE, augmentations, cached dataset; AMP on CUDA)
on synthetic 64^3 studies, as a training job would, but in-process so that the numbers are the
recipe's and not the job's start-up. On CUDA a sampler thread reads the GPU's utilisation
(``nvidia-smi``, else ``torch.cuda.utilization``) every 0.5 s while the epochs run. Prints a table and
writes ``benchmarks/results/training.json``.

    .venv/bin/python benchmarks/training.py                      # 16 studies, 4 epochs
    .venv/bin/python benchmarks/training.py --studies 8 --epochs 2 --channels classic
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.apploader import load_app  # noqa: E402
from server.training.base import TrainContext  # noqa: E402

SIZE = 64


def make_studies(folder: Path, n: int, size: int) -> list[dict[str, str]]:
    from monai.data import create_test_image_3d

    items = []
    affine = np.diag([1.5, 1.5, 2.0, 1.0])  # the app's default target spacing: no resampling
    for i in range(n):
        image, label = create_test_image_3d(
            size,
            size,
            size,
            num_objs=6,
            rad_max=10,
            rad_min=3,
            num_seg_classes=2,
            random_state=np.random.RandomState(i),
        )
        img_path, lab_path = folder / f"img_{i}.nii.gz", folder / f"lab_{i}.nii.gz"
        nib.save(nib.Nifti1Image((image * 400 - 100).astype(np.int16), affine), str(img_path))
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(lab_path))
        items.append({"image": str(img_path), "label": str(lab_path)})
    return items


class GpuSampler:
    """Mean and max GPU utilisation (%) and memory (MiB) while running; nothing on a CPU-only machine."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.util: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.source = "none (CPU)"

    def _read(self) -> tuple[float, float] | None:
        exe = shutil.which("nvidia-smi")
        if exe is not None:
            out = subprocess.run(
                [exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
            if out:
                util, mem = (float(x) for x in out.splitlines()[0].split(","))
                self.source = "nvidia-smi"
                return util, mem
        try:
            self.source = "torch.cuda.utilization"
            return float(torch.cuda.utilization()), torch.cuda.memory_allocated() / 2**20
        except (RuntimeError, ModuleNotFoundError):
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            sample = self._read()
            if sample is not None:
                self.util.append(sample[0])
                self.mem.append(sample[1])

    def __enter__(self) -> GpuSampler:
        if torch.cuda.is_available():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any] | None:
        if not self.util:
            return None
        return {
            "source": self.source,
            "samples": len(self.util),
            "util_mean_pct": round(statistics.mean(self.util), 1),
            "util_max_pct": round(max(self.util), 1),
            "memory_max_mib": round(max(self.mem), 1),
        }


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    load_before = os.getloadavg()
    spec = load_app(REPO / "apps" / "segmentation", {"channels": args.channels, "roi_size": str(SIZE)})
    trainer = spec.trainers["segmentation"].task
    epochs: list[dict[str, Any]] = []
    marks = [time.perf_counter()]

    def on_epoch(stats: dict[str, Any]) -> None:
        now = time.perf_counter()
        epochs.append(
            {
                "epoch": stats["epoch"],
                "epoch_s": round(now - marks[-1], 3),
                "train_samples_per_s": stats["train_samples_per_second"],
                "train_loss": stats["train"]["metrics"]["train_loss"],
            }
        )
        marks.append(now)

    with tempfile.TemporaryDirectory() as tmp:
        items = make_studies(Path(tmp), args.studies, SIZE)
        params = {
            "max_epochs": args.epochs,
            "val_split": 0.2,
            "train_batch_size": args.batch,
            "early_stop_patience": 0,
            "pretrained": False,
        }
        ctx = TrainContext(items, Path(tmp) / "out", params, device=device, on_epoch=on_epoch)
        with GpuSampler() as gpu:
            start = time.perf_counter()
            result = trainer.run(ctx)
            total = time.perf_counter() - start
    steady = epochs[1:] or epochs  # the first epoch also fills the cache
    val_studies = int(result.metrics["val_studies"])
    return {
        "benchmark": "training",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": device if device == "cpu" else torch.cuda.get_device_name(0),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
        },
        "setup": {
            "recipe": "apps/segmentation SegmentationTrainer (DiceCE, flips/rot90/intensity jitter)",
            "network": f"UNet {args.channels}",
            "volume": [SIZE, SIZE, SIZE],
            "roi": [SIZE, SIZE, SIZE],
            "studies": args.studies,
            "train_studies": args.studies - val_studies,
            "val_studies": val_studies,
            "batch": args.batch,
            "epochs": args.epochs,
            "amp": device == "cuda",
        },
        "epochs": epochs,
        "summary": {
            "total_s": round(total, 2),
            "first_epoch_s": epochs[0]["epoch_s"],
            "epoch_s_steady_mean": round(statistics.mean(e["epoch_s"] for e in steady), 3),
            "train_samples_per_s_steady_mean": round(
                statistics.mean(e["train_samples_per_s"] for e in steady), 3
            ),
            "best_val_mean_dice": round(result.best_metric, 4),
        },
        "gpu": GpuSampler.summary(gpu),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", choices=("light", "classic"), default="light")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training.json")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    s, m = result["summary"], result["machine"]
    print(f"\n{'device':<8} {'epoch':>5} {'epoch s':>9} {'train samples/s':>16}")
    for e in result["epochs"]:
        print(f"{m['device']:<8} {e['epoch']:>5} {e['epoch_s']:>9.2f} {e['train_samples_per_s']:>16.2f}")
    print(
        f"steady: {s['epoch_s_steady_mean']:.2f} s/epoch, "
        f"{s['train_samples_per_s_steady_mean']:.2f} samples/s; "
        f"GPU: {result['gpu'] or 'n/a (CPU run)'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
