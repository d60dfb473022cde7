"""How ``DAGDriver`` fills an HTTP adapter's parameters from a request, by FastAPI's rules (Ray
2.5 resolved adapters with FastAPI's dependency injection, so its users wrote them that way):

- annotated ``starlette.requests.Request`` (or not annotated, without a default): the request;
- ``bytes``: the raw body; for a ``multipart/form-data`` request, the uploaded file of that
  name (or the only one), as Ray's ``image_to_ndarray(img: bytes = File(...))`` received it;
- a scalar (``int``, ``float``, ``str``, ``bool``, an ``Enum``, ``Optional`` of one, ...): the
  query parameter of that name, converted; required unless the parameter has a default;
- anything else (a pydantic model, ``dict[str, NdArray]``, ``list[float]``): the JSON body,
  validated; with more than one such parameter, each is the body's member of its name;
- FastAPI's markers, as a default or in ``Annotated[...]``, say where a value comes from:
  ``Query``, ``Header``, ``Cookie``, ``Body`` (``embed=True``), ``Form``, ``File``.

What is missing or does not validate is one ``422`` with every problem, in FastAPI's shape:
``{"detail": [{"type": "missing", "loc": ["query", "n"], "msg": "Field required", ...}]}``.
FastAPI itself is not needed; forms need ``python-multipart`` (part of the ``serve`` extra).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import json
import types
import typing
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ember.errors import EmberError

_SCALARS = (int, float, str, bool, decimal.Decimal, uuid.UUID, datetime.date, datetime.time,
            datetime.timedelta, enum.Enum)
_MARKERS = ("File", "Form", "Body", "Query", "Header", "Cookie", "Path")
_MISSING = object()


class InvalidRequest(EmberError, ValueError):
    """Parameters of an adapter that the request does not supply, or supplies wrong: the
    driver answers 422 with ``detail`` (a list of FastAPI-shaped errors)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        self.detail = detail
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                   for e in detail))


@dataclass
class _Param:
    name: str
    source: str  # request | raw | query | header | cookie | body | form | file
    annotation: Any
    default: Any = _MISSING  # _MISSING: required
    key: str = ""  # the query/header/cookie/form/body member name
    embed: bool = False
    schema: Any = field(default=None, repr=False)


Reader = Callable[[Any], Awaitable[list[Any]]]


def readers_for(fn: Callable[..., Any]) -> Reader:
    """An ``async (request) -> [argument, ...]`` for adapter ``fn``'s parameters; raises
    ``InvalidRequest`` (422) with every missing or invalid one."""
    hints = _hints(fn)
    params = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        params.append(_classify(fn, param, hints.get(param.name, param.empty)))
    bodies = [p for p in params if p.source == "body"]
    if len(bodies) > 1:  # FastAPI: several body parameters are members of one JSON object
        for p in bodies:
            p.embed = True
    if any(p.source in ("form", "file") for p in params):
        _need_multipart(fn)
    for p in params:
        if p.source in ("query", "header", "cookie", "body", "form"):
            p.schema = _schema(p.annotation)

    async def read(request: Any) -> list[Any]:
        values: list[Any] = []
        errors: list[dict[str, Any]] = []
        cache: dict[str, Any] = {}
        for p in params:
            try:
                values.append(await _value(p, request, cache))
            except _Problems as exc:
                errors += exc.errors
                values.append(None)
        if errors:
            raise InvalidRequest(errors)
        return values

    return read


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s parameters' annotations, evaluated one by one: under ``from __future__ import
    annotations`` they are strings, and in a replica the names they use may be missing (a
    function shipped by value carries the globals its code uses, not its annotations'); such
    an annotation, or a return annotation, must not cost the others."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    hints = {}
    namespace = getattr(inspect.unwrap(fn), "__globals__", None)
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        if name == "return":
            continue

        def probe() -> None: ...

        probe.__annotations__ = {"value": annotation}
        try:
            hints[name] = typing.get_type_hints(probe, globalns=namespace,
                                                include_extras=True)["value"]
        except Exception:  # read as absent
            continue
    return hints


def _classify(fn: Callable[..., Any], param: inspect.Parameter, annotation: Any) -> _Param:
    default = param.default
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        marker = next((m for m in extras if _marker(m)), None)
        annotation = base
        if marker is not None:
            return _from_marker(fn, param.name, annotation, marker,
                                _MISSING if default is param.empty else default)
    if _marker(default):
        return _from_marker(fn, param.name, annotation, default, _marker_default(default))
    value = _MISSING if default is param.empty else default
    if annotation is inspect.Parameter.empty:
        if value is _MISSING:
            return _Param(param.name, "request", annotation)
        return _Param(param.name, "query", annotation, value, param.name)
    if annotation is Any or _is_request(annotation):
        return _Param(param.name, "request", annotation)
    if annotation is bytes:
        return _Param(param.name, "raw", annotation, value, param.name)
    if _is_upload(annotation):
        return _Param(param.name, "file", annotation, value, param.name)
    if _is_scalar(annotation):
        return _Param(param.name, "query", annotation, value, param.name)
    return _Param(param.name, "body", annotation, value, param.name)


def _marker(value: Any) -> str | None:
    """The kind of FastAPI parameter marker ``value`` is (``Query()`` -> "Query"), if one."""
    for cls in type(value).__mro__:
        if cls.__module__ == "fastapi.params" and cls.__name__ in _MARKERS:
            return cls.__name__
    return None


def _marker_default(marker: Any) -> Any:
    value = getattr(marker, "default", _MISSING)
    if value is Ellipsis or type(value).__name__ == "PydanticUndefinedType":
        return _MISSING
    return value


def _from_marker(fn: Callable[..., Any], name: str, annotation: Any, marker: Any,
                 default: Any) -> _Param:
    kind = _marker(marker)
    if default is _MISSING:
        default = _marker_default(marker)
    alias = getattr(marker, "alias", None)
    if kind == "Path":
        raise TypeError(f"adapter {_name(fn)}: parameter {name!r} is a Path parameter, but a "
                        "DAGDriver's routes have no path parameters; use Query() instead")
    if kind == "Header":
        key = alias or (name.replace("_", "-") if getattr(marker, "convert_underscores", True)
                        else name)
        return _Param(name, "header", annotation, default, key.lower())
    source = {"Query": "query", "Cookie": "cookie", "Body": "body", "Form": "form",
              "File": "file"}[kind or "Query"]
    return _Param(name, source, annotation, default, alias or name,
                  embed=bool(getattr(marker, "embed", False)))


def _need_multipart(fn: Callable[..., Any]) -> None:
    try:
        import python_multipart  # noqa: F401
    except ImportError:
        try:
            import multipart  # noqa: F401
        except ImportError:
            raise ImportError(
                f"adapter {_name(fn)} reads form fields, which needs python-multipart: pip "
                "install python-multipart (it comes with ember-scale[serve])") from None


class _Problems(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


async def _value(p: _Param, request: Any, cache: dict[str, Any]) -> Any:
    if p.source == "request":
        return request
    if p.source == "raw" and not _is_multipart(request):
        return bytes(await request.body())
    if p.source in ("raw", "file"):  # a bare bytes parameter of a form: its uploaded file
        upload = await _upload(p, request, cache)
        if upload is _MISSING:
            return _absent(p, "body")
        return bytes(await upload.read()) if p.annotation is bytes else upload
    if p.source == "body":
        return await _body_value(p, request, cache)
    if p.source == "form":
        form = await _form(request, cache)
        return _convert(p, _pick(form, p), "body")
    where = {"query": request.query_params, "header": request.headers,
             "cookie": request.cookies}[p.source]
    return _convert(p, _pick(where, p), p.source)


def _pick(where: Any, p: _Param) -> Any:
    if _is_sequence(p.annotation) and hasattr(where, "getlist"):
        values = where.getlist(p.key)
        return values if values else _MISSING
    return where.get(p.key, _MISSING)


def _convert(p: _Param, raw: Any, location: str) -> Any:
    if raw is _MISSING:
        return _absent(p, location)
    if p.schema is None:
        return raw
    import pydantic

    try:
        return p.schema.validate_python(raw)
    except pydantic.ValidationError as exc:
        raise _Problems(_located(exc, (location, p.key))) from None


def _absent(p: _Param, location: str) -> Any:
    if p.default is not _MISSING:
        return p.default
    loc = [location] if location == "body" and not p.embed and p.source == "body" else \
        [location, p.key]
    raise _Problems([{"type": "missing", "loc": loc, "msg": "Field required", "input": None}])


async def _body_value(p: _Param, request: Any, cache: dict[str, Any]) -> Any:
    import pydantic

    raw = await request.body()
    if not raw.strip():
        return _absent(p, "body")
    if not p.embed:
        try:
            return p.schema.validate_json(raw)
        except pydantic.ValidationError as exc:
            raise _Problems(_located(exc, ("body",))) from None
    if "json" not in cache:
        try:
            cache["json"] = json.loads(raw)
        except ValueError as exc:
            cache["json"] = _MISSING
            raise _Problems([{"type": "json_invalid", "loc": ["body"],
                              "msg": f"JSON decode error: {exc}", "input": None}]) from None
    document = cache["json"]
    if document is _MISSING:
        raise _Problems([])  # said once, for the first body parameter
    if not isinstance(document, dict):
        raise _Problems([{"type": "model_attributes_type", "loc": ["body"],
                          "msg": f"the body must be a JSON object with the member {p.key!r}",
                          "input": document}])
    return _convert(p, document.get(p.key, _MISSING), "body")


async def _form(request: Any, cache: dict[str, Any]) -> Any:
    if "form" not in cache:
        try:
            cache["form"] = await request.form()
        except Exception as exc:  # not a form, or a broken one
            raise _Problems([{"type": "value_error", "loc": ["body"],
                              "msg": f"the body is not a readable form: {exc}",
                              "input": None}]) from None
    return cache["form"]


async def _upload(p: _Param, request: Any, cache: dict[str, Any]) -> Any:
    form = await _form(request, cache)
    value = form.get(p.key)
    if value is None and p.source == "raw":  # a bare bytes parameter: the only file will do
        files = [v for _, v in form.multi_items() if hasattr(v, "read")]
        if len(files) != 1:
            return _MISSING
        value = files[0]
    if value is None:
        return _MISSING
    if not hasattr(value, "read"):
        raise _Problems([{"type": "value_error", "loc": ["body", p.key],
                          "msg": "Expected UploadFile, received: str", "input": value}])
    return value


def _located(exc: Any, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    for error in errors:
        if error.get("type") == "json_invalid":
            error["loc"] = ["body"]
            error["msg"] = f"JSON decode error: {error.get('msg')}; send a JSON body"
        else:
            error["loc"] = [*prefix, *error.get("loc", [])]
    return errors


def _schema(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return None
    import pydantic

    return pydantic.TypeAdapter(annotation)


def _is_scalar(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return all(a is type(None) or _is_scalar(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return True
    return inspect.isclass(annotation) and issubclass(annotation, _SCALARS)


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_sequence(a) for a in typing.get_args(annotation))
    return origin in (list, set, tuple, frozenset) or annotation in (list, set, tuple)


def _is_request(annotation: Any) -> bool:
    if not inspect.isclass(annotation):
        return False
    from starlette.requests import Request

    return issubclass(annotation, Request) or issubclass(Request, annotation)


def _is_upload(annotation: Any) -> bool:
    if not inspect.isclass(annotation):
        return False
    from starlette.datastructures import UploadFile

    return issubclass(annotation, UploadFile)


def _is_multipart(request: Any) -> bool:
    kind: str = request.headers.get("content-type", "")
    return kind.startswith("multipart/form-data")


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
