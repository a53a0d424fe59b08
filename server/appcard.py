"""The app's card: what ``/info/`` says about the app, kept on disk so a restart answers at once.

Loading an app imports torch and MONAI (seconds). What ``/info/`` tells a client about the app (its
models, trainers, strategies, scoring methods, labels) depends only on the app's files, its ``--conf`` and
this server's code, so after every load it is written to ``<data>/app-card.json`` under a key of those. A
server that starts and finds a card with its key answers ``/info/`` from it while the app loads in the
background (server/services.py); every other request that needs the app waits for the load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from server import __version__
from server.apploader import bundle_dirs
from server.appspec import AppSpec
from server.datastore import files
from server.settings import Settings

log = logging.getLogger(__name__)

CARD_FILE = "app-card.json"
CODE_DIRS = ("server", "strategies")  # this server's code: a change to it may change a model's description
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def describe(spec: AppSpec) -> dict[str, Any]:
    """The app's part of ``/info/``."""
    models = {}
    for name, m in spec.models.items():
        entry: dict[str, Any] = {
            "type": m.type,
            "labels": m.labels,
            "dimension": m.dimension,
            "description": m.description,
            "config": m.config,
        }
        if m.task is not None:
            entry.update(m.task.describe())
        models[name] = entry
    # No top-level "config" key: 3D Slicer refuses a server that sends one.
    return {
        "name": spec.name,
        "description": spec.description,
        "version": spec.version,
        "labels": spec.all_labels(),
        "models": models,
        "trainers": {n: {"description": t.description, "config": t.config} for n, t in spec.trainers.items()},
        "strategies": {n: {"description": s.description} for n, s in spec.strategies.items()},
        "scoring": {n: {"description": s.description} for n, s in spec.scoring.items()},
    }


def _tree_state(root: Path, suffixes: tuple[str, ...] | None) -> list[tuple[str, int, int]]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if suffixes is not None and not name.endswith(suffixes):
                continue
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return out


def card_key(settings: Settings) -> str:
    """A digest of what the card depends on: the app folder's files, ``--conf``, the server's code."""
    state = {
        "version": __version__,
        "app_dir": str(settings.app_dir),
        "conf": sorted(settings.conf.items()),
        "app": _tree_state(settings.app_dir, None),
        "code": [_tree_state(PACKAGE_ROOT / d, (".py",)) for d in CODE_DIRS],
        "bundles": [_tree_state(Path(p), None) for p in bundle_dirs(settings.conf)],
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def write_card(settings: Settings, spec: AppSpec) -> None:
    """The card of the app just loaded (atomically; a failure to write it only costs the next fast start)."""
    card = {"key": card_key(settings), "info": describe(spec)}
    try:
        files.write_text_atomic(settings.data / CARD_FILE, json.dumps(card, sort_keys=True))
    except OSError as exc:
        log.warning("app card not written: %s", exc)


def read_card(settings: Settings) -> dict[str, Any] | None:
    """The stored card when it was written for this very app, conf and code; else None."""
    path = settings.data / CARD_FILE
    try:
        card = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(card, dict)
        or card.get("key") != card_key(settings)
        or not isinstance(card.get("info"), dict)
    ):
        return None
    return card
