"""The one reading of MONAI Label's lax wire forms: booleans, numbers and choices as clients send them.

Clients send ``true``, ``"true"``, ``"1"`` or ``"yes"`` for a flag, numbers as strings in form fields, and a
list where one value is expected (the first of a choice list that ``/info/`` advertised). These parsers
accept exactly those forms and refuse anything else with a ``ValueError`` that says what was expected;
the pydantic types below (:data:`LaxBool`, :data:`LaxInt`, :data:`LaxFloat`) apply them to model fields,
so settings, request models and training parameters read a value the same way everywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def first_of_list(value: Any) -> Any:
    """A client's choice list stands for its first element."""
    if isinstance(value, (list, tuple)) and value:
        return value[0]
    return value


def parse_bool(value: Any) -> bool:
    value = first_of_list(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_int(value: Any) -> int:
    number = _number(value, "an integer")
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(number)
    return number


def parse_float(value: Any) -> float:
    return float(_number(value, "a number"))


def _number(value: Any, expected: str) -> int | float:
    """A finite int or float from a number or its text; booleans, NaN and infinities are refused."""
    found = first_of_list(value)
    if isinstance(found, str):
        text = found.strip()
        for convert in (int, float):
            try:
                found = convert(text)
                break
            except ValueError:
                continue
    if isinstance(found, int) and not isinstance(found, bool):
        return found
    if isinstance(found, float) and math.isfinite(found):
        return found
    raise ValueError(f"expected {expected}, got {value!r}")


def describe(exc: ValidationError, label: Callable[[str], str]) -> str:
    """``<label(field)>: <reason>`` for each invalid field of a pydantic model, on one line."""
    parts = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{label(name)}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


LaxBool = Annotated[bool, BeforeValidator(parse_bool)]
LaxInt = Annotated[int, BeforeValidator(parse_int)]
LaxFloat = Annotated[float, BeforeValidator(parse_float)]


def finite_dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes invalid JSON: a NaN or infinity anywhere (a score, an old info
    value) becomes null; the common case pays one strict pass only."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:  # a NaN somewhere: the rare slow path
        return json.dumps(finite(value), allow_nan=False, **kwargs)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (nested in dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
