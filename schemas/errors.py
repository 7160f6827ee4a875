"""Turn a pydantic ValidationError into one clear line that never repeats what the producer
chose: not the values (a customer's name, email or document number) and not the names of
fields the schema does not know (a producer can put anything in a key, personal data and
control characters included). Fields the schema knows are named; any other key is named by
its position in its object. Every reason is plain printable text of bounded length, because
it goes into a SQL column, a Redis field, a result message and log lines."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ValidationError

MAX_REASON = 300

# Control characters (C0, DEL, C1), format characters that reorder or hide text (bidi
# overrides, zero-width), line and paragraph separators, and lone surrogates (not text).
UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ufff9-\ufffb\ud800-\udfff]"
)
_SPACES = re.compile(" {2,}")

# pydantic error types whose message repeats part of the input.
_ECHOING = {"union_tag_invalid": "the tag does not match any of the expected tags"}


def clean_text(text: str, limit: int = MAX_REASON) -> str:
    """Printable single-line text of at most `limit` characters: unprintable characters
    become spaces (so that words stay apart), runs of spaces one, the end is cut with "..."."""
    text = text[: limit * 4]  # the work below stays proportional to the limit, not the input
    text = _SPACES.sub(" ", UNPRINTABLE.sub(" ", text)).strip()
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _annotation_parts(annotation: Any) -> Iterator[Any]:
    """The annotation and every type inside it (list[X], X | None, Annotated[X, ...])."""
    stack = [annotation]
    while stack:
        item = stack.pop()
        yield item
        if typing.get_origin(item) is not None or isinstance(item, types.UnionType):
            stack.extend(typing.get_args(item))


def _annotation_models(annotation: Any) -> Iterable[type[BaseModel]]:
    """The models found inside a field annotation."""
    return (
        item
        for item in _annotation_parts(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel)
    )


def _is_mapping(annotation: Any) -> bool:
    return any(item is dict or typing.get_origin(item) is dict for item in _annotation_parts(annotation))


def _reachable_models(models: Iterable[type[BaseModel]]) -> Iterator[type[BaseModel]]:
    """These models and every model nested in their fields, each once."""
    seen: set[type[BaseModel]] = set()
    stack = list(models)
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for info in model.model_fields.values():
            stack.extend(_annotation_models(info.annotation))


def mapping_fields(models: Iterable[type[BaseModel]]) -> frozenset[str]:
    """The fields of these models (nested ones too) that hold a free-form object, such as
    the envelope's metadata: a key inside one is the producer's key, not an unknown field."""
    return frozenset(
        info.alias if isinstance(info.alias, str) else name
        for model in _reachable_models(models)
        for name, info in model.model_fields.items()
        if _is_mapping(info.annotation)
    )


def known_names(models: Iterable[type[BaseModel]]) -> frozenset[str]:
    """Every field name and alias of these models and of the models nested in them."""
    names: set[str] = set()
    for model in _reachable_models(models):
        for name, info in model.model_fields.items():
            names.add(name)
            names.update(a for a in (info.alias, info.validation_alias) if isinstance(a, str))
    return frozenset(names)


@lru_cache(maxsize=1)
def _schema_names() -> tuple[frozenset[str], frozenset[str]]:
    # Imported here: schemas.envelope and schemas.payloads do not depend on this module, but
    # keep the import cheap for the sandbox, which imports describe() early.
    from schemas.envelope import Envelope
    from schemas.payloads import PAYLOAD_MODELS

    models: list[type[BaseModel]] = [Envelope, *PAYLOAD_MODELS.values()]
    return known_names(models), mapping_fields(models)


def _key_position(data: Any, path: tuple[Any, ...], key: str) -> int | None:
    """1-based position of `key` in the object found at `path` inside `data`, if there."""
    node = data
    for step in path:
        in_dict = isinstance(node, dict) and isinstance(step, str) and step in node
        in_list = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        if not (in_dict or in_list):
            return None
        node = node[step]
    if isinstance(node, dict):
        for i, name in enumerate(node, 1):
            if name == key:
                return i
    return None


def _where(loc: tuple[Any, ...], data: Any, known: frozenset[str], mappings: frozenset[str]) -> str:
    parts: list[str] = []
    for i, step in enumerate(loc):
        in_mapping = i > 0 and loc[i - 1] in mappings
        if isinstance(step, int) or (isinstance(step, str) and step in known and not in_mapping):
            parts.append(str(step))
            continue
        position = _key_position(data, loc[:i], step) if isinstance(step, str) else None
        if step == "" and position is None:
            continue  # pydantic's own empty step, not a key of the input
        label = "key" if in_mapping else "unknown field"
        parts.append(f"<{label} {position}>" if position is not None else f"<{label}>")
    return ".".join(parts)


def describe(
    exc: ValidationError,
    prefix: str = "",
    data: Any = None,
    known: frozenset[str] | None = None,
) -> str:
    """One line naming each failing field and what is wrong with it. `data`: the input that
    was validated, to give an unknown key its position; `known`: the field names that may be
    named (default: those of the envelope and of every provider payload)."""
    names, mappings = _schema_names()
    if known is not None:
        names = known
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = _where(tuple(err["loc"]), data, names, mappings)
        where = f"{prefix}{'.' if prefix and loc else ''}{loc}" or prefix or "message"
        msg = _ECHOING.get(err["type"], err["msg"])
        # pydantic's "Value error, ..." prefix is noise for a producer reading the reason.
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    text = "; ".join(parts[:10]) + ("; ..." if len(parts) > 10 else "")
    return clean_text(text)
