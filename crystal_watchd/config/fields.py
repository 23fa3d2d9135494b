"""Building blocks of the config models: a value type for the JSON Schema, cleaned by one
of yamldoc's checks.

Each setting is declared once as ``Annotated[<type with constraints>, <check>]``: pydantic
writes the type and its bounds into config.schema.json (so editors complete and check the
file), and the check, run before pydantic's own, gives the message a person reads (the same
wording everywhere, with the bounds and the value given). A value that passed the check
always satisfies the declared type, so pydantic's generic messages only appear for shapes
(unknown, missing or misplaced keys), which problems.py words.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

from .yamldoc import boolean, choice, nonempty_text, number, path_in, text_list


class Settings(BaseModel):
    """A mapping of settings: unknown keys rejected, help text from the attribute docs."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        # `log:` with nothing after it is YAML for null; it means "all defaults".
        return {} if data is None else data


def checked(type_: Any, check: Callable[..., Any], *, schema: Any = None,
            **constraints: Any) -> Any:
    """``type_`` (plus ``constraints``) in the schema; ``check`` cleans and words problems.
    ``schema``: what the file may say when it differs from the cleaned value's type."""
    extra = {} if schema is None else {"json_schema_input_type": schema}
    return Annotated[type_, Field(**constraints), BeforeValidator(check, **extra)]


def num(lo: float, hi: float, *, integer: bool = False) -> Any:
    """A number from ``lo`` to ``hi`` (true/false are not numbers)."""
    return checked(int if integer else float, number(lo, hi, integer=integer), ge=lo, le=hi)


def one_of(*choices: str) -> Any:
    """One of ``choices``, in any letter case."""
    return checked(Literal[choices], choice(*choices))


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def optional_num(lo: float, hi: float) -> Any:
    return checked(float | None, optional(number(lo, hi)), ge=lo, le=hi)


def _path(value: Any, info: ValidationInfo) -> Path:
    # Relative to the config file's folder, which parse() passes as context.
    return path_in(info.context["base"])(value)


def _optional_path(value: Any, info: ValidationInfo) -> Path | None:
    return None if value is None else _path(value, info)


Flag = checked(bool, boolean)
Text = checked(str, nonempty_text, min_length=1)
TextList = checked(tuple[str, ...], text_list)
PathIn = checked(Path, _path, schema=str)
OptionalPath = checked(Path | None, _optional_path, schema=str | None)
