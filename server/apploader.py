"""Load ``<app>/main.py`` by path, in isolation: ``sys.path`` and the app's own modules are restored after."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from server.appspec import AppSpec, ModelSpec, TrainerSpec


class AppLoadError(Exception):
    """The app folder is broken; the message says which file and why."""


def load_app(app_dir: Path, conf: dict[str, str] | None = None) -> AppSpec:
    """Import ``main.py`` and call its ``build_app(app_dir, conf) -> AppSpec``."""
    app_dir = Path(app_dir).resolve()
    main = app_dir / "main.py"
    if not main.is_file():
        raise AppLoadError(f"{main}: not found; an app is a folder with a main.py defining build_app()")
    saved_path = list(sys.path)
    before = set(sys.modules)
    module_name = "labelloop_app_" + hashlib.sha1(str(app_dir).encode()).hexdigest()[:12]
    sys.path.insert(0, str(app_dir))
    try:
        spec = importlib.util.spec_from_file_location(module_name, main)
        if spec is None or spec.loader is None:
            raise AppLoadError(f"{main}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        build = getattr(module, "build_app", None)
        if not callable(build):
            raise AppLoadError(f"{main}: defines no build_app(app_dir, conf) function")
        app = build(app_dir, dict(conf or {}))
        if not isinstance(app, AppSpec):
            raise AppLoadError(
                f"{main}: build_app() returned {type(app).__name__}, expected server.appspec.AppSpec"
            )
        add_bundles(app, bundle_dirs(conf or {}))
        return app
    except AppLoadError:
        raise
    except Exception as exc:
        raise AppLoadError(f"{main}: failed to load: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path[:] = saved_path
        # Forget the app's own modules (those under its folder) so two apps may share module names.
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if name == module_name or (file and Path(file).resolve().is_relative_to(app_dir)):
                del sys.modules[name]


def bundle_dirs(conf: dict[str, str]) -> list[Path]:
    """``--conf bundles DIR[,DIR]``: MONAI Bundle folders to host as models."""
    return [Path(p.strip()).expanduser().resolve() for p in conf.get("bundles", "").split(",") if p.strip()]


def add_bundles(app: AppSpec, dirs: list[Path]) -> None:
    """Each bundle folder as a model named after the folder (server/inference/bundle.py), and a trainer
    of the same name when the bundle has a ``configs/train.json`` (server/training/bundle.py)."""
    if not dirs:
        return
    from server.inference.bundle import bundle_models
    from server.training.bundle import BundleTrainer, train_config

    for name, task in bundle_models(dirs).items():
        if name in app.models:
            raise AppLoadError(f"--conf bundles: the app already has a model named {name!r}")
        app.models[name] = ModelSpec(
            name=name,
            type=task.type,
            labels=task.labels,
            dimension=task.dimension,
            description=task.description,
            task=task,
        )
        if train_config(task.path) is not None:
            if name in app.trainers:
                raise AppLoadError(f"--conf bundles: the app already has a trainer named {name!r}")
            trainer = BundleTrainer(task.path, name)
            app.trainers[name] = TrainerSpec(
                name=name, description=trainer.description, config=trainer.config(), task=trainer
            )
