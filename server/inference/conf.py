"""Typed reading of an app's ``--conf KEY VALUE`` strings: a wrong value fails at start, clearly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from server.wire import parse_bool


def conf_bool(conf: Mapping[str, str], key: str, default: bool) -> bool:
    raw = conf.get(key)
    if raw is None or raw == "":
        return default
    try:
        return parse_bool(raw)
    except ValueError:
        raise ValueError(f"--conf {key} {raw!r}: expected true or false") from None


def conf_int(conf: Mapping[str, str], key: str, default: int, minimum: int | None = None) -> int:
    raw = conf.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"--conf {key} {raw!r}: expected an integer") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"--conf {key} {raw!r}: must be >= {minimum}")
    return value


def conf_float(conf: Mapping[str, str], key: str, default: float) -> float:
    raw = conf.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"--conf {key} {raw!r}: expected a number") from None


def conf_choice(conf: Mapping[str, str], key: str, choices: Sequence[str]) -> str:
    """The value, which must be one of ``choices``; the first choice is the default."""
    raw = (conf.get(key) or choices[0]).strip().lower()
    if raw not in choices:
        raise ValueError(f"--conf {key} {raw!r}: expected one of {', '.join(choices)}")
    return raw


def conf_list(conf: Mapping[str, str], key: str, default: Sequence[str]) -> list[str]:
    raw = conf.get(key)
    if raw is None or not raw.strip():
        return list(default)
    items = [s.strip() for s in raw.split(",") if s.strip()]
    if not items:
        raise ValueError(f"--conf {key} {raw!r}: expected a comma-separated list")
    return items


def conf_ints(
    conf: Mapping[str, str], key: str, default: Sequence[int], length: int | None = None
) -> tuple[int, ...]:
    """``"64"`` or ``"64,64,32"``; a single number is repeated to ``length``."""
    raw = conf.get(key)
    if raw is None or not raw.strip():
        return tuple(default)
    try:
        values = tuple(int(s) for s in raw.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--conf {key} {raw!r}: expected integers like 64 or 64,64,32") from None
    if length is not None and len(values) == 1:
        values = values * length
    if not values or (length is not None and len(values) != length) or min(values) <= 0:
        raise ValueError(f"--conf {key} {raw!r}: expected {length or 'some'} positive integers")
    return values


def conf_floats(
    conf: Mapping[str, str], key: str, default: Sequence[float] | None, length: int
) -> tuple[float, ...] | None:
    """Like ``conf_ints`` for floats; ``none`` or ``native`` gives None (e.g. no resampling)."""
    raw = conf.get(key)
    if raw is None or not raw.strip():
        return None if default is None else tuple(default)
    if raw.strip().lower() in ("none", "native"):
        return None
    try:
        values = tuple(float(s) for s in raw.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--conf {key} {raw!r}: expected numbers like 1.5 or 1.5,1.5,2") from None
    if len(values) == 1:
        values = values * length
    if len(values) != length or min(values) <= 0:
        raise ValueError(f"--conf {key} {raw!r}: expected {length} positive numbers")
    return values
