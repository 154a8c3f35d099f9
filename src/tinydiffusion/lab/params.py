"""A request's fields as Python values, each bad one named in one sentence (UserError -> HTTP 400)."""
from __future__ import annotations

import math

from ..errors import UserError


def number(params: dict, key: str, kind, default=None):
    """params[key] as an int or a finite float; default when absent or empty."""
    value = params.get(key, default)
    if value is None or value == "":
        return default
    try:
        out = kind(value)
    except (TypeError, ValueError, OverflowError):
        out = None
    if out is None or (kind is float and not math.isfinite(out)):
        raise UserError(f"{key} must be a {'whole number' if kind is int else 'number'}, got '{value}'.")
    return out


def flag(params: dict, key: str) -> bool:
    """A checkbox: true, "true", "on", "1" are on; absent, false, "", "false", "off", "0" are off."""
    value = params.get(key, False)
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "on", "1"):
        return True
    if str(value).lower() in ("false", "off", "0", "", "none"):
        return False
    raise UserError(f"{key} must be true or false, got '{value}'.")
