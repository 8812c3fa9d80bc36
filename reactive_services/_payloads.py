"""Typed payloads: the type a handler's annotation asks for, and its validation with pydantic.

A handler ``def handle(self, order: Order)`` gets an ``Order``: the runtime validates each
record's decoded value with pydantic's ``TypeAdapter(Order)`` before the call (a pydantic
model, a dataclass, a ``TypedDict`` or any other type ``TypeAdapter`` accepts). A value that
does not validate raises :class:`~reactive_services.errors.ValidationError` naming the field
paths, which the services turn into a dead letter (payload handlers) or an error reply
(request handlers).

The annotations that mean "the decoded JSON as it is" validate nothing and cost nothing:
none, ``Any``, ``object``, ``dict``, ``dict[str, Any]``, ``Mapping[str, Any]``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pydantic

from .errors import ConfigError, ValidationError

__all__ = [
    "PayloadModel",
    "check_handler",
    "field_path",
    "payload_model",
    "pipeline_model",
    "takes_message",
    "validation_error",
]

#: ``model=`` not given: the type comes from the handler's annotation.
FROM_ANNOTATION: Any = object()

_UNTYPED: tuple[Any, ...] = (Any, object, dict, dict[str, Any], Mapping, Mapping[str, Any], inspect.Parameter.empty)

#: Characters of a value quoted in a validation error's message, at most.
INPUT_CHARS = 40

#: Errors a validation error's message lists, at most (then ``; and N more``): a record with
#: thousands of bad fields must still fit its dead letter's headers.
MAX_ERRORS = 10


class PayloadModel:
    """Validates decoded values as ``type_`` (pydantic ``TypeAdapter``), raising our own error.

    Calling it costs one ``TypeAdapter.validate_python`` (pydantic-core, compiled once here).

    Args:
        type_: any type ``pydantic.TypeAdapter`` accepts.
        what: how the errors name the value (default: the type's name).

    Raises:
        ConfigError: pydantic cannot build a validator for ``type_`` (key ``"model"``).
    """

    __slots__ = ("type", "what", "validate")

    def __init__(self, type_: Any, what: str | None = None) -> None:
        self.type = type_
        self.what = what or _type_name(type_)
        try:
            adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(type_)
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
            raise ConfigError("model", f"cannot validate payloads as {type_!r}: {exc}") from exc
        #: ``value -> validated value``, raising pydantic's own ``ValidationError`` (no wrapper
        #: call: the services' hot path uses it and turns the error into ours with :meth:`error`)
        self.validate: Callable[[Any], Any] = adapter.validate_python

    def __call__(self, value: Any) -> Any:
        """``value`` validated (and converted) as :attr:`type`.

        Raises:
            ValidationError: it does not validate; the message names each failing field's path.
        """
        try:
            return self.validate(value)
        except pydantic.ValidationError as exc:
            raise validation_error(exc, self.what) from None

    def error(self, error: Exception) -> Exception:
        """``error`` as raised by :meth:`__call__`: pydantic's ``ValidationError`` becomes ours
        (:func:`validation_error`); anything else is returned as it is."""
        if isinstance(error, pydantic.ValidationError):
            return validation_error(error, self.what)
        return error

    def __repr__(self) -> str:
        return f"PayloadModel({self.what})"


def _type_name(type_: Any) -> str:
    """How errors name ``type_``: its name (``Annotated[int, ...]``: ``int``), or its repr."""
    if typing.get_origin(type_) is typing.Annotated:
        type_ = typing.get_args(type_)[0]
    name = getattr(type_, "__name__", None)
    return name if isinstance(name, str) else repr(type_)


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error's ``loc`` as a field path: names joined with dots, list indices in
    brackets: ``("items", 0, "quantity")`` -> ``"items[0].quantity"``; ``()`` -> ``""``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def validation_error(exc: pydantic.ValidationError, what: str) -> ValidationError:
    """Our :class:`~reactive_services.errors.ValidationError` for pydantic's ``exc``.

    Its message is ``invalid <what>: <path>: <message> (got <input>); ...``, one entry per
    error for the first :data:`MAX_ERRORS` (then ``; and N more``), the path as
    :func:`field_path` writes it (``items[0].quantity``; ``(root)`` for the value itself), the
    input quoted up to :data:`INPUT_CHARS` characters; its ``fields`` are every path, in order.
    """
    parts: list[str] = []
    fields: list[str] = []
    errors = exc.errors(include_url=False, include_context=False)
    for error in errors:
        path = field_path(error["loc"]) or "(root)"
        fields.append(path)
        if len(parts) < MAX_ERRORS:
            got = repr(error.get("input"))
            if len(got) > INPUT_CHARS:
                got = got[: INPUT_CHARS - 3] + "..."
            parts.append(f"{path}: {error['msg']} (got {got})")
    more = f"; and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
    return ValidationError(f"invalid {what}: " + "; ".join(parts) + more, fields=tuple(fields))


def takes_message(handler: Callable[..., Any]) -> bool:
    """True when ``handler`` is called as ``handler(payload, message)`` (two positional
    parameters or more, or ``*args``), False for ``handler(payload)``."""
    params = inspect.signature(handler).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 2


def _untyped(annotation: Any) -> bool:
    """``annotation`` means "the decoded JSON as it is" (see the module's docstring)."""
    return any(annotation is u or annotation == u for u in _UNTYPED)


def check_handler(handler: Callable[..., Any], pattern: str) -> None:
    """Check that ``handler`` can be called as ``handler(payload)`` or ``handler(payload, message)``
    (what the services call payload and request handlers with).

    Raises:
        ConfigError: it takes no positional parameter, needs more than two, or has a keyword-only
            parameter without a default (the key names the pattern).
    """
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # no signature (a builtin): nothing to check
        return
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    keyword = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    name = getattr(handler, "__qualname__", repr(handler))
    if not positional:
        raise ConfigError(pattern, f"handler {name} must take the payload: (payload) or (payload, message)")
    if len(required) > 2 or keyword:
        extra = ", ".join(required[2:] + keyword)
        raise ConfigError(
            pattern, f"handler {name} is called with (payload) or (payload, message); it also needs {extra}"
        )


def pipeline_model(handler: Callable[..., Any], model: Any = FROM_ANNOTATION) -> PayloadModel | None:
    """The validator of the messages of a pipeline handler: ``model`` if given (None: none), else
    ``T`` of its first parameter's annotation ``Observable[Message[T]]``; None when there is no
    such annotation or ``T`` means "the decoded JSON as it is".

    Raises:
        ConfigError: as :func:`payload_model`.
    """
    if model is not FROM_ANNOTATION:
        return None if model is None else PayloadModel(model)
    annotation = _first_annotation(handler)
    args = typing.get_args(annotation)  # Observable[Message[T]] -> (Message[T],)
    if len(args) != 1:
        return None
    inner = typing.get_args(args[0])  # Message[T] -> (T,)
    if len(inner) != 1 or _untyped(inner[0]):
        return None
    return PayloadModel(inner[0])


def payload_model(handler: Callable[..., Any], model: Any = FROM_ANNOTATION) -> PayloadModel | None:
    """The validator of ``handler``'s payload: ``model`` if given (None: no validation), else the
    annotation of its first parameter (after ``self`` for a bound method); None when that
    annotation means "the decoded JSON as it is" (see the module's docstring).

    Raises:
        ConfigError: the annotation cannot be resolved (a name not importable where the handler
            is defined), or pydantic cannot validate the type (key ``"model"``).
    """
    if model is not FROM_ANNOTATION:
        return None if model is None else PayloadModel(model)
    annotation = _first_annotation(handler)
    if _untyped(annotation):
        return None
    return PayloadModel(annotation)


def _first_annotation(handler: Callable[..., Any]) -> Any:
    """The resolved annotation of ``handler``'s first positional parameter (after ``self`` for a
    bound method); :data:`inspect.Parameter.empty` when there is none.

    Raises:
        ConfigError: a string annotation that does not resolve (key ``"model"``).
    """
    try:
        params = [
            p
            for p in inspect.signature(handler).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):  # no signature (a builtin): untyped
        return inspect.Parameter.empty
    if not params:
        return inspect.Parameter.empty
    annotation = params[0].annotation
    if isinstance(annotation, str):  # from __future__ import annotations: resolve this one only
        target = getattr(handler, "__func__", handler)
        if not isinstance(target, types.FunctionType):  # a callable object: its __call__'s module
            method = type(handler).__call__
            target = getattr(method, "__func__", method)
        holder = types.SimpleNamespace(
            __annotations__={"payload": annotation}, __globals__=getattr(target, "__globals__", {})
        )
        try:
            annotation = typing.get_type_hints(holder, include_extras=True)["payload"]
        except Exception as exc:  # noqa: BLE001 - any failure to resolve names the handler
            raise ConfigError(
                "model", f"cannot resolve the payload annotation {annotation!r} of {handler!r}: {exc}"
            ) from exc
    return annotation
