"""Classification app: a small CNN for 3D nodules and a ResNet for 7-class 2D skin lesions.

Models (``--conf models nodule,lesion``, both by default):

- ``nodule``: 3D patches (32^3, lung window) -> benign / malignant with the small CNN (three
  conv-pool blocks, two dense layers); ``--conf nodule_activation sigmoid`` for independent labels.
- ``lesion``: 2D RGB images -> the seven HAM10000 classes with ``resnet18`` (default) or
  ``densenet121`` (``--conf lesion_network``). ``--conf pretrained /path/weights.pt`` loads the
  backbone from a local file (transfer learning: new head; ``--conf freeze_backbone false`` to
  fine-tune everything); ``--conf lesion_size 224`` for the classic input size (default 64, CPU).

``/infer`` answers JSON probabilities; ``output=image`` a Grad-CAM map of the predicted class.
``--conf semi_supervised true`` trains on the unlabelled studies too (pseudo-labels from the teacher's
confident predictions; default false, or per training request).
"""

from __future__ import annotations

from pathlib import Path

from server.appspec import AppSpec, ModelSpec, TrainerSpec
from server.inference.classification import ACTIVATIONS, ClassificationConfig, ClassificationTask
from server.inference.conf import conf_bool, conf_choice, conf_int, conf_list
from server.inference.networks import CLASSIFIER_HEADS
from server.inference.transforms import intensity_transform
from server.training.classification import ClassificationTrainer

NODULE_LABELS = ["benign", "malignant"]
# HAM10000: actinic keratosis, basal cell carcinoma, benign keratosis, dermatofibroma, melanoma,
# melanocytic nevus, vascular lesion.
LESION_LABELS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
LUNG_WINDOW = (-1000.0, 400.0)


def build_app(app_dir: Path, conf: dict[str, str]) -> AppSpec:
    wanted = conf_list(conf, "models", ["nodule", "lesion"])
    unknown = set(wanted) - {"nodule", "lesion"}
    if unknown:
        raise ValueError(
            f"--conf models: unknown {', '.join(sorted(unknown))}; expected nodule and/or lesion"
        )
    models: dict[str, ModelSpec] = {}
    trainers: dict[str, TrainerSpec] = {}
    semi = conf_bool(conf, "semi_supervised", False)
    if "nodule" in wanted:
        size = conf_int(conf, "nodule_size", 32, minimum=8)
        nodule = ClassificationConfig(
            network="cnn",
            dimension=3,
            in_channels=1,
            spatial_size=(size, size, size),
            activation=conf_choice(conf, "nodule_activation", ACTIVATIONS),
            window=LUNG_WINDOW,
        )
        models["nodule"] = _model(
            "nodule", NODULE_LABELS, nodule, "3D nodule patch: benign or malignant (small CNN)"
        )
        trainers["nodule"] = _trainer("nodule", NODULE_LABELS, nodule, models["nodule"], semi)
    if "lesion" in wanted:
        size = conf_int(conf, "lesion_size", 64, minimum=32)
        pretrained = conf.get("pretrained")
        lesion = ClassificationConfig(
            network=conf_choice(conf, "lesion_network", ("resnet18", "densenet121")),
            dimension=2,
            in_channels=3,
            spatial_size=(size, size),
            activation="softmax",
            preset="minmax",
            pretrained=Path(pretrained).expanduser() if pretrained else None,
            freeze_backbone=conf_bool(conf, "freeze_backbone", True),
        )
        models["lesion"] = _model(
            "lesion",
            LESION_LABELS,
            lesion,
            f"2D skin lesion, 7 classes ({lesion.network}, transfer learning)",
        )
        trainers["lesion"] = _trainer("lesion", LESION_LABELS, lesion, models["lesion"], semi)
    return AppSpec(
        name="labelloop classification",
        description="2D and 3D image classification with active learning",
        labels=sorted({label for m in models.values() for label in m.labels}),
        models=models,
        trainers=trainers,
    )


def _model(name: str, labels: list[str], config: ClassificationConfig, description: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        type="classification",
        labels=labels,
        dimension=config.dimension,
        description=description,
        task=ClassificationTask(labels, config, description),
    )


def _trainer(
    name: str, labels: list[str], config: ClassificationConfig, model: ModelSpec, semi: bool = False
) -> TrainerSpec:
    # The trainer builds ``task.initial_network()`` (backbone from ``pretrained`` when set), freezes
    # all but the head with server.inference.transfer, and unfreezes after ``unfreeze_epoch``.
    task: ClassificationTask = model.task
    transfer = config.freeze_backbone and config.pretrained is not None
    trainer = ClassificationTrainer(
        name,
        f"Train the {name} classifier ({config.network}, cross-entropy)",
        classes=labels,
        network_factory=task.initial_network,
        spatial_size=config.spatial_size,
        in_channels=config.in_channels,
        intensity=lambda key: intensity_transform(key, config.preset, config.window),
        head=CLASSIFIER_HEADS[config.network],
        freeze_backbone=transfer,
        unfreeze_epoch=10 if transfer else -1,
        max_epochs=30,
        val_split=0.2,
        train_batch_size=16,
        val_batch_size=16,
        semi_supervised={"enabled": semi, "method": "pseudo_label", "threshold": 0.95, "max_unlabelled": 256},
    )
    return TrainerSpec(
        name=name,
        description=trainer.description,
        task=trainer,
        config={
            "model": name,
            "name": "train_01",
            "max_epochs": 30,
            "val_split": 0.2,
            "train_batch_size": 16,
            "val_batch_size": 16,
            "freeze_backbone": config.freeze_backbone,
            "unfreeze_epoch": 10 if config.freeze_backbone and config.pretrained else -1,
            "augmentation": ["flip", "rotate90", "intensity"],
            "semi_supervised": trainer.config()["semi_supervised"],
        },
    )
