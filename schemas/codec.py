"""Fast JSON codec for events on the hot path.

The pydantic models in `schemas.events` are the contract (JSON Schema, API responses),
but validating through pydantic costs ~5x msgspec per event. `codec_for(Model)` derives a
msgspec Struct from the model's own fields and constraints, so there is one definition
and the hot path still rejects invalid input with a precise reason.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from operator import attrgetter
from typing import Annotated, Any, Generic, NamedTuple, TypeVar, cast, get_args

import msgspec
from pydantic import BaseModel

from schemas.exceptions import SchemaError

ModelT = TypeVar("ModelT", bound=BaseModel)

# `pattern` is checked by `Codec` instead, with a cache: a regex per value per record
# would cost more than the whole rest of the decode (exchange and symbol repeat).
_CONSTRAINTS = ("gt", "ge", "lt", "le", "min_length", "max_length")
PATTERN_CACHE_SIZE = 10_000


def _pattern(metadata: list[Any]) -> re.Pattern[str] | None:
    for item in metadata:
        if getattr(item, "pattern", None) is not None:
            return re.compile(item.pattern)
    return None


def _msgspec_meta(metadata: list[Any]) -> msgspec.Meta | None:
    """Translate pydantic/annotated-types constraints into one msgspec.Meta."""
    found: dict[str, Any] = {}
    for item in metadata:
        for name in _CONSTRAINTS:
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    return msgspec.Meta(**found) if found else None


def _constrain(annotation: Any, meta: msgspec.Meta) -> Any:
    """Attach `meta` where msgspec accepts it: on str/int/float, inside an Optional.

    msgspec has no bounds for Decimal; those fields are re-checked by pydantic wherever
    they leave the hot path (their topics are low-rate).
    """
    if annotation in (str, int, float):
        return Annotated[annotation, meta]
    args = get_args(annotation)
    if len(args) == 2 and type(None) in args:
        inner = next(arg for arg in args if arg is not type(None))
        return _constrain(inner, meta) | None
    return annotation


@cache
def struct_for(model: type[BaseModel]) -> type[msgspec.Struct]:
    """A msgspec Struct with the same fields, types, defaults and constraints as `model`."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        annotation: Any = info.annotation
        meta = _msgspec_meta(list(info.metadata))
        if meta is not None:
            annotation = _constrain(annotation, meta)
        if info.is_required():
            fields.append((name, annotation))
        else:
            fields.append((name, annotation, info.default))
    # Required fields must precede optional ones in a Struct; order on the wire is kept
    # by encoding through the pydantic field order (see `Codec.encode`).
    fields.sort(key=lambda field: len(field) == 3)
    return msgspec.defstruct(
        model.__name__ + "Wire", fields, forbid_unknown_fields=True, frozen=True, kw_only=True
    )


class RejectedElement(NamedTuple):
    """One bad event of a batch record: its own bytes and why it was rejected."""

    raw: bytes
    reason: str


class Codec(Generic[ModelT]):
    """Decode and encode one event type as JSON, validating like the pydantic model."""

    def __init__(self, model: type[ModelT]) -> None:
        self.model = model
        self.struct = struct_for(model)
        self._decoder = msgspec.json.Decoder(self.struct)
        self._batch_decoder = msgspec.json.Decoder(list[self.struct])  # type: ignore[name-defined]
        self._elements_decoder = msgspec.json.Decoder(list[msgspec.Raw])
        self._encoder = msgspec.json.Encoder(decimal_format="string")
        self._field_order = tuple(model.model_fields)
        # Decimals go out in plain notation ("0.000000000000000001", never "1E-18"), so
        # every consumer reads the exact amount without scientific-notation parsing.
        self._decimal_fields = frozenset(
            name for name, info in model.model_fields.items() if info.annotation is Decimal
        )
        self._encode_struct_as_is = (
            self.struct.__struct_fields__ == self._field_order and not self._decimal_fields
        )
        self._patterns = {
            name: pattern
            for name, info in model.model_fields.items()
            if (pattern := _pattern(list(info.metadata))) is not None
        }
        self._matched: dict[str, set[str]] = {name: set() for name in self._patterns}

    def decode(self, raw: bytes | str | None) -> Any:
        """One event as a Struct; raises `SchemaError` with the reason on bad input.

        `None` (a Kafka record without a value, e.g. a tombstone) is bad input too.
        """
        if raw is None:
            raise SchemaError("empty record value")
        try:
            event = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise SchemaError(f"invalid {self.model.__name__}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise SchemaError(f"not valid JSON: {exc}") from exc
        self._check_patterns([event])
        return event

    def decode_batch(self, raw: bytes | str | None) -> tuple[list[Any], list[RejectedElement]]:
        """The events of a record holding a JSON array of them (or a single object).

        A bad element does not spoil its neighbours: it comes back in the second list
        with its own bytes and reason, so only it goes to the dead-letter topic. A record
        that is not JSON, or an empty array, raises `SchemaError` as a whole.
        """
        if raw is None:
            raise SchemaError("empty record value")
        data = raw.encode() if isinstance(raw, str) else raw
        if data.lstrip()[:1] != b"[":
            return [self.decode(data)], []
        try:
            events = self._batch_decoder.decode(data)
            self._check_patterns(events)
        except (msgspec.ValidationError, SchemaError):
            return self._decode_each(data)
        except msgspec.DecodeError as exc:
            raise SchemaError(f"not valid JSON: {exc}") from exc
        if not events:
            raise SchemaError("empty batch: a record holds at least one event")
        return events, []

    def _decode_each(self, data: bytes) -> tuple[list[Any], list[RejectedElement]]:
        """The slow path of `decode_batch`, taken only when some element is invalid."""
        try:
            elements = self._elements_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise SchemaError(f"not valid JSON: {exc}") from exc
        events, rejected = [], []
        for element in elements:
            try:
                events.append(self.decode(bytes(element)))
            except SchemaError as exc:
                rejected.append(RejectedElement(bytes(element), exc.reason))
        return events, rejected

    def _check_patterns(self, events: list[Any]) -> None:
        """Check the pattern-constrained fields of `events`, each distinct value of a field
        once (a batch record holds one exchange and one symbol hundreds of times)."""
        for name, pattern in self._patterns.items():
            matched = self._matched[name]
            for value in set(map(attrgetter(name), events)) - matched:
                if value is not None:
                    self._check_pattern(name, pattern, value)

    def _check_pattern(self, name: str, pattern: re.Pattern[str], value: str) -> None:
        if pattern.search(value) is None:
            raise SchemaError(
                f"invalid {self.model.__name__}: Expected `str` matching regex "
                f"{pattern.pattern!r} - at `$.{name}`"
            )
        matched = self._matched[name]
        if len(matched) < PATTERN_CACHE_SIZE:
            matched.add(value)

    def encode(self, event: Any) -> bytes:
        """Canonical JSON bytes: fields in contract order, so replays are byte-identical."""
        if self._encode_struct_as_is:
            return self._encoder.encode(event)
        return self._encoder.encode(
            {
                name: format(value, "f") if name in self._decimal_fields else value
                for name in self._field_order
                for value in (getattr(event, name),)
            }
        )

    def encode_batch(self, events: list[Any]) -> bytes:
        """One record value holding `events` as a JSON array (see `decode_batch`)."""
        return b"[" + b",".join(map(self.encode, events)) + b"]"

    def build(self, **fields: Any) -> Any:
        """A validated Struct from keyword fields (round-trips through the decoder)."""
        return self.decode(self._encoder.encode(fields))


@cache
def codec_for(model: type[ModelT]) -> Codec[ModelT]:
    """The shared codec of a model."""
    return cast(Codec[ModelT], Codec(model))
