"""Unknown configuration keys: the closest known key, for the message that refuses one.

The data config (`features/contract.py`) and the settings (`churn/settings.py`) forbid keys
they do not know, so a typo is an error instead of a setting silently ignored; this module
adds to pydantic's "Extra inputs are not permitted" the nearest known key ("did you mean
`customer_id`?"), found by walking the model along the error's location.
"""

from __future__ import annotations

import difflib
import types
import typing

from pydantic import BaseModel


def _step(annotation, part) -> list:
    """The annotations found at `part` below `annotation`: a model's field, a dict's value, a list's item."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _step(arg, part)]
    if origin is dict and isinstance(part, str):
        return [typing.get_args(annotation)[1]]
    if origin in (list, tuple) and isinstance(part, int):
        return list(typing.get_args(annotation)[:1])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
        return [annotation.model_fields[part].annotation]
    return []


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can be: `Source`, `Source | None`, ..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the model accepts where `loc` points (a pydantic error's location, its last part the key in question)."""
    current: list = [model]
    for part in loc[:-1]:
        current = [a for annotation in current for a in _step(annotation, part)]
    return sorted({key for annotation in current for m in _models_in(annotation) for key in m.model_fields})


def closest_key(model: type[BaseModel], loc: tuple) -> str | None:
    """The known key nearest to the unknown one at `loc` (difflib's ratio >= 0.6), or None."""
    if not loc or not isinstance(loc[-1], str):
        return None
    found = difflib.get_close_matches(loc[-1], known_keys(model, loc), n=1)
    return found[0] if found else None


def error_message(model: type[BaseModel], error: dict) -> str:
    """pydantic's message of one error; for an unknown key, with the closest known key (or the known keys)."""
    if error["type"] != "extra_forbidden":
        return error["msg"]
    loc = tuple(error["loc"])
    closest = closest_key(model, loc)
    if closest:
        return f"{error['msg']}; did you mean `{closest}`?"
    keys = known_keys(model, loc)
    return f"{error['msg']}; the keys here are {', '.join(keys)}" if keys else error["msg"]
