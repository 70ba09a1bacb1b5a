"""Reading requests into the typed models of ``web.models`` and writing replies from them.

Every way in (JSON body, query string, HTML form, path id) ends in the same validation and the
same per-field messages; every problem is a ``web.handle`` error or an ``ApiError`` (4xx), never
a 500. Limits owned here: JSON nesting depth (``MAX_JSON_DEPTH``) and ids within PostgreSQL's
bigint (larger path ids are simply not found).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError
from .handle import InvalidInput, Missing
from .models import MAX_ID, Body, FieldErrors

M = TypeVar("M", bound=BaseModel)
B = TypeVar("B", bound=Body)

MAX_JSON_DEPTH = 32
_JSON: TypeAdapter[Any] = TypeAdapter(Any)

_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "missing": "required",
    "extra_forbidden": "unknown field",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "date_from_datetime_parsing": "a date such as 2026-12-01",
    "date_parsing": "a date such as 2026-12-01",
    "time_parsing": "a time such as 02:00",
    "datetime_from_date_parsing": "a date-time such as 2026-12-01T02:00:00Z",
    "datetime_parsing": "a date-time such as 2026-12-01T02:00:00Z",
}
_PATTERNS = {"name": "letters, digits, '.', '_' or '-', up to 64 characters"}


def _bounds(model: type[BaseModel], field: str) -> tuple[Any, Any]:
    info = model.model_fields.get(field)
    low = high = None
    for meta in info.metadata if info else ():
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    return low, high


def _message(model: type[BaseModel], error: Mapping[str, Any], field: str, item: bool) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        return _PATTERNS.get(field, "letters, digits, '.', '_' or '-', up to 64 characters")
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = (None, None) if item else _bounds(model, field)
        if low is not None and high is not None:
            return f"must be between {low} and {high}"
        if kind == "greater_than_equal":
            return f"must be at least {ctx.get('ge')}"
        return f"must be at most {ctx.get('le')}"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    message = str(error["msg"])
    return message[:1].lower() + message[1:]


_WRONG_SHAPE = {"string_type", "model_type", "model_attributes_type", "dict_type", "list_type"}


def field_errors(model: type[BaseModel], exc: ValidationError) -> dict[str, str]:
    """Field name → message for every problem. Per field, a message about the value wins over
    "wrong type" (a value that may be a name or an object fails both ways)."""
    errors: dict[str, str] = {}
    shape: dict[str, str] = {}
    for error in exc.errors():
        ctx = error.get("ctx") or {}
        if isinstance(ctx.get("error"), FieldErrors):
            for field, message in ctx["error"].errors.items():
                errors.setdefault(field, message)
            continue
        loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
        field = loc[0] if loc else "body"
        item = len(loc) > 1 and loc[1].isdigit()
        message = _message(model, error, field, item)
        if item:
            message = f"item {int(loc[1]) + 1}: {message}"
        (shape if error["type"] in _WRONG_SHAPE else errors).setdefault(field, message)
    return {**shape, **errors}


def validate(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` as a ``model``, or ``InvalidInput`` naming every field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(model, exc)
        if issubclass(model, Body):
            for field, message in model.raw_problems(dict(data)).items():
                errors.setdefault(field, message)
        for field, message in _cross_field_problems(model, data, errors).items():
            errors.setdefault(field, message)
        raise InvalidInput.of(errors) from None


def _cross_field_problems(
    model: type[BaseModel], data: Mapping[str, Any], errors: Mapping[str, str]
) -> dict[str, str]:
    """The cross-field checks (which pydantic runs only once every field is valid) on the input
    without its invalid fields, so that one post reports every problem at once."""
    rest = {k: v for k, v in data.items() if k not in errors}
    if len(rest) == len(data):
        return {}
    try:
        model.model_validate(rest)
    except ValidationError as again:
        found: dict[str, str] = {}
        for error in again.errors():
            ctx = error.get("ctx") or {}
            if isinstance(ctx.get("error"), FieldErrors):
                found.update(ctx["error"].errors)
        return found
    return {}


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


async def read_json(request: Request) -> Any:
    """The JSON body (415 without the JSON content type, 400 when malformed or nested deeper
    than ``MAX_JSON_DEPTH``)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "send a JSON body with Content-Type: application/json")
    raw = await request.body()
    try:
        data = _JSON.validate_json(raw or b"null")
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        if "recursion limit" in reason:  # the parser's own depth guard (about 200 levels)
            raise ApiError(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH}") from None
        raise ApiError(400, f"the body is not valid JSON: {reason}") from None
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise ApiError(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH}")
    return data


async def body(request: Request, model: type[B], *, optional: bool = False) -> B:
    """The request's JSON object as ``model`` (``optional``: an empty body is ``{}``)."""
    if optional and not await request.body():
        return validate(model, {})
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return validate(model, data)


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """Form or query values without the empty ones: an empty field means "not given"."""
    return {k: v for k, v in values.items() if v not in ("", None)}


def query(request: Request, model: type[M]) -> M:
    """The query string as ``model`` (unknown parameters ignored)."""
    return validate(model, given(request.query_params))


def path_id(request: Request, name: str) -> int:
    """A path id; beyond PostgreSQL's bigint it cannot exist: ``Missing`` (404)."""
    value = int(request.path_params[name])
    if not 1 <= value <= MAX_ID:
        raise Missing(f"no {name.removesuffix('_id')} with id {value}")
    return value


def reply(model: type[BaseModel], status: int = 200, /, **fields: Any) -> Response:
    """A JSON response serialised through ``model`` (so it is what the document says)."""
    content = model.model_construct(**fields).model_dump_json()
    return Response(content, status_code=status, media_type="application/json")


def record(value: Any) -> dict[str, Any]:
    """A storage record's fields, for ``reply`` with a ``models.record_model`` model."""
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


def split_list(text: str) -> list[str]:
    """A form's comma- or line-separated list."""
    return [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]
