"""Checking the fields of a JSON document by hand, where jsonschema is not installed (a bundle's device):
required keys, types and a few value rules, each failure one line naming the field."""

from __future__ import annotations

import dataclasses
import re

from .base import InferenceError

_SHA256 = re.compile(r"[0-9a-f]{64}")


class FieldError(InferenceError):
    """A field that is missing or of the wrong type (bad input: exit 2)."""


_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
    type(None): "null",
}


def _is(value, kinds) -> bool:
    for kind in kinds:
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind not in (int, float) and isinstance(value, kind):
            return True
    return False


def get(doc: dict, key: str, *kinds, where: str = "", optional: bool = False):
    """``doc[key]`` after checking it is one of ``kinds`` (``type(None)`` for null); a missing ``optional``
    key is None."""
    if key not in doc:
        if optional:
            return None
        raise FieldError(f"{where}{key} is missing")
    value = doc[key]
    if not _is(value, kinds):
        wanted = " or ".join(_KIND_NAMES[k] for k in kinds)
        raise FieldError(f"{where}{key} must be {wanted} (got {type(value).__name__})")
    return value


def sha256(doc: dict, key: str, where: str) -> str:
    value = get(doc, key, str, where=where)
    if not _SHA256.fullmatch(value):
        raise FieldError(f"{where}{key} is not a sha256 (64 lowercase hex digits)")
    return value


def items(doc: dict, key: str, kind, *, where: str = "", minimum: int = 0) -> list:
    """The list ``doc[key]`` after checking each item is a ``kind`` and there are at least ``minimum``."""
    values = get(doc, key, list, where=where)
    if len(values) < minimum:
        raise FieldError(f"{where}{key} needs at least {minimum} item(s)")
    for n, value in enumerate(values):
        if not _is(value, (kind,)):
            raise FieldError(f"{where}{key}[{n}] must be {_KIND_NAMES[kind]}")
    return values


def with_extra(cls, doc: dict):
    """``cls`` (a dataclass with an ``extra`` field) from ``doc``: the fields it declares as themselves, every
    other key in ``extra`` (what a newer edgebench wrote: kept and written back, not interpreted)."""
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return cls(
        **{k: v for k, v in doc.items() if k in names}, extra={k: v for k, v in doc.items() if k not in names}
    )
