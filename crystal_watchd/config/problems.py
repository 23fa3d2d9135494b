"""pydantic's validation errors, worded as config problems: file, line and key path.

A value that fails a setting's own check carries that check's message (fields.py);
the rest are about the shape of the file (an unknown key, a missing one, a list where a
mapping belongs), worded here the way a person editing YAML thinks of them.
"""

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from .yamldoc import Doc, kind_of

#: Messages for a key whose value has the wrong shape (a list that is missing or empty, ...).
SHAPES = {
    ("folders",): "must list at least one folder (each with inbox and outbox)",
    ("hooks",): "must be a list of hooks, not {kind}",
}
_MAPPING_ERRORS = ("model_type", "model_attributes_type", "dict_type")
_LIST_ERRORS = ("list_type", "tuple_type", "too_short")


def report(doc: Doc, exc: ValidationError, root: type[BaseModel]) -> None:
    """Record every error of ``exc`` (validating ``root``) as a problem in ``doc``."""
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        doc.problem(loc, _message(error, loc, root))


def _message(error: Any, loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "extra_forbidden":
        return unknown_key(str(loc[-1]), allowed_keys(root, loc[:-1]))
    if kind == "missing":
        return SHAPES.get(loc, "is required").format(kind="nothing")
    if kind in _MAPPING_ERRORS:
        return f"must be a mapping of settings, not {kind_of(value)}"
    if kind in _LIST_ERRORS:
        return SHAPES.get(loc, "must be a list, not {kind}").format(kind=kind_of(value))
    return error["msg"]


def unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    tip = f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(allowed)}"
    return f"unknown setting{tip}"


def allowed_keys(root: type[BaseModel], path: tuple[Any, ...]) -> tuple[str, ...]:
    """The keys the mapping at ``path`` (list positions included) may hold."""
    model: type[BaseModel] | None = root
    for part in path:
        if model is None:
            break
        if isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    return tuple(model.model_fields) if model is not None else ()


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, looking through Optional, list and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
