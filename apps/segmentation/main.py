"""Segmentation app: a 3D U-Net for organs and tumours in CT or MR, declared in one place.

Settings (``--conf KEY VALUE``):

- ``labels``: comma-separated, background excluded (default ``liver,tumour``)
- ``network``: ``unet`` (default) or ``attention_unet``
- ``channels``: ``light`` (8/16/32/64, default, CPU-friendly) or ``classic`` (64/128/256/512, the
  liver-tumour U-Net's 64 base channels)
- ``preset``: ``ct`` (default; abdominal window -175..250 HU) or ``mr`` (0.5-99.5 percentiles);
  ``window`` ``LOW,HIGH`` overrides the range
- ``spacing``: target voxel spacing in mm (default ``1.5,1.5,2``; ``native`` keeps the input's)
- ``roi_size``: sliding-window size, ``32`` or ``64`` (default) or ``X,Y,Z``
- ``crop_foreground``, ``largest_component``, ``crf``: ``true``/``false`` (default false)
- ``semi_supervised``: ``true`` to train on the unlabelled studies too (Mean Teacher; default false); a
  training request can switch it per run with ``{"semi_supervised": {"enabled": true, ...}}``
- ``strategies``: which next-sample strategies to expose (default ``random,first,last,entropy,tta``).
  Score-based ones read what ``POST /scoring/`` (or the rescore after each training) stores:
  ``stratified_random`` bins the stored ``entropy.foreground_fraction``, ``hybrid`` spreads its batch
  over the stored bottleneck embeddings; request params ``strata`` / ``embeddings`` override them.
- ``interactive``: ``true`` to host ``deepedit`` too, an interactive model that takes foreground and
  background clicks (3D Slicer's SmartEdit, the OHIF panel's Point Prompts) and its trainer; the app's
  labels then include ``background`` (label 0), which is how the plugins send background clicks;
  ``deepedit_epochs`` (default 50) and ``deepedit_sigma``, the width in voxels of each click's Gaussian
  guidance signal in training and inference (default 3, MONAI's)
"""

from __future__ import annotations

from pathlib import Path

from server.appspec import AppSpec, ModelSpec, ScoringSpec, TrainerSpec
from server.inference.conf import (
    conf_bool,
    conf_choice,
    conf_float,
    conf_floats,
    conf_int,
    conf_ints,
    conf_list,
)
from server.inference.deepedit import GUIDANCE_SIGMA, DeepEditTask, checked_sigma, with_background
from server.inference.networks import SEGMENTATION_NETWORKS, UNET_CHANNELS
from server.inference.segmentation import SegmentationConfig, SegmentationTask
from server.inference.transforms import intensity_transform
from server.training.deepedit import DeepEditTrainer
from server.training.segmentation import SegmentationTrainer
from strategies.entropy import EntropyScoring
from strategies.registry import BUILTIN_STRATEGIES
from strategies.tta import TTAScoring

DEFAULT_STRATEGIES = ["random", "first", "last", "entropy", "tta"]


def segmentation_config(conf: dict[str, str]) -> SegmentationConfig:
    window = conf_floats(conf, "window", None, 2)
    if window is not None and window[0] >= window[1]:
        raise ValueError(f"--conf window {conf.get('window')!r}: expected LOW,HIGH with LOW < HIGH")
    return SegmentationConfig(
        network=conf_choice(conf, "network", SEGMENTATION_NETWORKS),
        channels=UNET_CHANNELS[conf_choice(conf, "channels", ("light", "classic"))],
        preset=conf_choice(conf, "preset", ("ct", "mr")),
        window=(window[0], window[1]) if window is not None else None,
        spacing=_triple(conf_floats(conf, "spacing", (1.5, 1.5, 2.0), 3)),
        roi_size=_int_triple(conf_ints(conf, "roi_size", (64, 64, 64), 3)),
        sw_batch_size=conf_int(conf, "sw_batch_size", 1, minimum=1),
        crop_foreground=conf_bool(conf, "crop_foreground", False),
        largest_component=conf_bool(conf, "largest_component", False),
        crf=conf_bool(conf, "crf", False),
    )


def build_app(app_dir: Path, conf: dict[str, str]) -> AppSpec:
    labels = conf_list(conf, "labels", ["liver", "tumour"])
    label_map = {name: i for i, name in enumerate(labels, 1)}
    config = segmentation_config(conf)
    description = (
        f"3D {config.network} ({'/'.join(map(str, config.channels))}) segmentation of {', '.join(labels)}"
    )
    task = SegmentationTask(label_map, config, description)
    # The trainer builds the task's own network with the task's preprocessing, so published weights fit.
    trainer = SegmentationTrainer(
        "segmentation",
        f"Train the {config.network} on the datastore's final labels (DiceCE)",
        labels=label_map,
        network_factory=task.network,
        roi_size=config.roi_size,
        spacing=config.spacing,
        intensity=lambda key: intensity_transform(key, config.preset, config.window),
        max_epochs=50,
        early_stop_patience=-1,
        val_split=0.2,
        semi_supervised={"enabled": conf_bool(conf, "semi_supervised", False), "max_unlabelled": 64},
    )
    scoring_methods = [EntropyScoring(roi_size=config.roi_size), TTAScoring(3, roi_size=config.roi_size)]
    wanted = conf_list(conf, "strategies", DEFAULT_STRATEGIES)
    unknown = sorted(set(wanted) - set(BUILTIN_STRATEGIES))
    if unknown:
        raise ValueError(f"--conf strategies: unknown {unknown}; choose from {sorted(BUILTIN_STRATEGIES)}")
    models = {
        "segmentation": ModelSpec(
            name="segmentation",
            type="segmentation",
            labels=label_map,
            dimension=3,
            description=description,
            config={"largest_component": config.largest_component},
            task=task,
        )
    }
    trainers = {
        "segmentation": TrainerSpec(
            name="segmentation",
            description=trainer.description,
            task=trainer,
            config={
                "model": "segmentation",
                "name": "train_01",
                "pretrained": True,
                "max_epochs": 50,
                "early_stop_patience": -1,
                "val_split": 0.2,
                "train_batch_size": 1,
                "val_batch_size": 1,
                "roi_size": list(config.roi_size),
                "semi_supervised": trainer.config()["semi_supervised"],
            },
        )
    }
    interactive = conf_bool(conf, "interactive", False)
    if interactive:
        models["deepedit"], trainers["deepedit"] = deepedit(label_map, config, conf)
    return AppSpec(
        name="labelloop segmentation",
        strategies={name: BUILTIN_STRATEGIES[name]() for name in wanted},
        scoring={
            m.name: ScoringSpec(name=m.name, description=m.description, method=m) for m in scoring_methods
        },
        description="3D segmentation of CT/MR volumes with active learning",
        labels=with_background(label_map) if interactive else labels,
        models=models,
        trainers=trainers,
    )


def deepedit(
    label_map: dict[str, int], config: SegmentationConfig, conf: dict[str, str]
) -> tuple[ModelSpec, TrainerSpec]:
    """The interactive model: the automatic network's settings, with one guidance channel per label."""
    sigma = conf_float(conf, "deepedit_sigma", GUIDANCE_SIGMA)
    try:
        sigma = checked_sigma(sigma)
    except ValueError as exc:
        raise ValueError(f"--conf deepedit_sigma: {exc}") from None
    task = DeepEditTask(
        label_map,
        config,
        f"DeepEdit: interactive {config.network} segmentation of {', '.join(label_map)} from clicks",
        sigma=sigma,
    )
    epochs = conf_int(conf, "deepedit_epochs", 50, minimum=1)
    trainer = DeepEditTrainer(
        "deepedit",
        labels=label_map,
        network_factory=task.network,
        guidance_sigma=sigma,
        roi_size=config.roi_size,
        spacing=config.spacing,
        intensity=lambda key: intensity_transform(key, config.preset, config.window),
        max_epochs=epochs,
        early_stop_patience=-1,
        val_split=0.2,
    )
    model = ModelSpec(
        name="deepedit",
        type="deepedit",
        labels=task.label_names(),
        dimension=3,
        description=task.description,
        task=task,
    )
    spec = TrainerSpec(
        name="deepedit",
        description=trainer.description,
        task=trainer,
        config={"model": "deepedit", "name": "train_01", "pretrained": True, **_public(trainer.config())},
    )
    return model, spec


def _public(cfg: dict[str, object]) -> dict[str, object]:
    keep = (
        "max_epochs",
        "val_split",
        "train_batch_size",
        "roi_size",
        "interaction_probability",
        "max_interactions",
    )
    return {k: cfg[k] for k in keep if k in cfg}


def _triple(values: tuple[float, ...] | None) -> tuple[float, float, float] | None:
    return None if values is None else (values[0], values[1], values[2])


def _int_triple(values: tuple[int, ...]) -> tuple[int, int, int]:
    return (values[0], values[1], values[2])
