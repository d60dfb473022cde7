"""How ``DAGDriver`` fills an HTTP adapter's parameters (``ember/serve/_adapter_params.py``):
FastAPI's rules, as Ray 2.5 users wrote adapters for them. Requests are built in memory; the
driver over real HTTP is in ``test_graph.py``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Optional

import httpx
import pytest
from fastapi import Body, Cookie, File, Form, Header, Path, Query, UploadFile
from pydantic import BaseModel
from starlette.requests import Request

from ember.serve._adapter_params import InvalidRequest, readers_for


class Item(BaseModel):
    name: str
    price: float


def request(query: str = "", body: bytes = b"", headers: dict[str, str] | None = None,
            **encode: Any) -> Request:
    """A POST request to /?query with this body (or httpx's encoding of ``files``/``data``)."""
    headers = dict(headers or {})
    if encode:
        built = httpx.Request("POST", "http://test/", **encode)
        body = built.read()
        headers["content-type"] = built.headers["content-type"]
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "root_path": "",
             "query_string": query.encode(), "http_version": "1.1",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


def read(fn: Any, req: Request) -> list[Any]:
    async def values() -> list[Any]:
        try:
            return await readers_for(fn)(req)
        finally:
            await req.close()  # as the driver does: uploaded files are closed (no warning)

    return asyncio.run(values())


def problems(fn: Any, req: Request) -> list[tuple[str, list[Any]]]:
    with pytest.raises(InvalidRequest) as caught:
        read(fn, req)
    return [(e["type"], e["loc"]) for e in caught.value.detail]


def test_rays_documented_query_adapter_reads_and_converts_query_parameters() -> None:
    def parse_query_args(field_a: int, field_b: str) -> tuple[int, str]:
        return field_a, field_b

    assert read(parse_query_args, request("field_a=3&field_b=x")) == [3, "x"]
    # every problem at once, located as FastAPI locates them
    assert problems(parse_query_args, request("field_a=three")) == [
        ("int_parsing", ["query", "field_a"]), ("missing", ["query", "field_b"])]


def test_defaults_optional_values_and_lists() -> None:
    def adapter(n: int = 5, flag: bool = False, tag: Optional[str] = None,  # noqa: UP045
                ids: list[int] = Query([])) -> None:
        ...

    assert read(adapter, request()) == [5, False, None, []]
    assert read(adapter, request("n=7&flag=true&tag=a&ids=1&ids=2")) == [7, True, "a", [1, 2]]
    assert problems(adapter, request("flag=maybe")) == [("bool_parsing", ["query", "flag"])]


def test_a_model_is_the_json_body_beside_query_parameters() -> None:
    def adapter(item: Item, limit: int = 10) -> None:
        ...

    item, limit = read(adapter, request("limit=2", b'{"name": "pen", "price": 1.5}'))
    assert item == Item(name="pen", price=1.5) and limit == 2
    assert problems(adapter, request(body=b'{"name": "pen"}')) == [
        ("missing", ["body", "price"])]
    assert problems(adapter, request()) == [("missing", ["body"])]
    assert problems(adapter, request(body=b"{oops")) == [("json_invalid", ["body"])]


def test_several_bodies_are_members_of_one_json_object() -> None:
    def adapter(a: Item, b: Item, weight: float = Body(1.0)) -> None:
        ...

    body = b'{"a": {"name": "x", "price": 1}, "b": {"name": "y", "price": 2}, "weight": 0.5}'
    a, b, weight = read(adapter, request(body=body))
    assert (a.name, b.price, weight) == ("x", 2.0, 0.5)
    assert problems(adapter, request(body=b'{"a": {"name": "x", "price": 1}}')) == [
        ("missing", ["body", "b"])]
    assert problems(adapter, request(body=b"[1, 2]"))[0] == ("model_attributes_type", ["body"])


def test_fastapi_markers_say_where_a_value_comes_from() -> None:
    def adapter(x_token: str = Header(...), session: Optional[str] = Cookie(None),  # noqa: UP045
                item_id: Annotated[int, Query(alias="item-id")] = 0,
                item: Item = Body(..., embed=True)) -> None:
        ...

    req = request("item-id=9", b'{"item": {"name": "a", "price": 3}}',
                  headers={"X-Token": "secret", "Cookie": "session=s1"})
    assert read(adapter, req) == ["secret", "s1", 9, Item(name="a", price=3)]
    assert problems(adapter, request(body=b'{"name": "a", "price": 3}')) == [
        ("missing", ["header", "x-token"]), ("missing", ["body", "item"])]


def test_forms_and_uploaded_files() -> None:
    def adapter(caption: str = Form(...), img: bytes = File(...),
                extra: Optional[UploadFile] = File(None)) -> None:  # noqa: UP045
        ...

    req = request(data={"caption": "a cat"}, files={"img": ("cat.png", b"\x89PNG...")})
    caption, img, extra = read(adapter, req)
    assert (caption, img, extra) == ("a cat", b"\x89PNG...", None)
    assert problems(adapter, request(data={"caption": "x"}, files={"other": ("a", b"1"),
                                                                 "more": ("b", b"2")})) == [
        ("missing", ["body", "img"])]


def test_bytes_is_the_body_or_the_uploaded_file_of_its_name() -> None:
    def image(img: bytes) -> bytes:
        return img

    assert read(image, request(body=b"raw bytes")) == [b"raw bytes"]
    assert read(image, request(files={"img": ("a.png", b"from a form")})) == [b"from a form"]
    assert read(image, request(files={"photo": ("a.png", b"the only file")})) == [
        b"the only file"]


def test_the_request_itself_and_untyped_parameters() -> None:
    async def adapter(request, verbose="no"):  # type: ignore[no-untyped-def]
        ...

    req = request("verbose=yes")
    assert read(adapter, req) == [req, "yes"]


def test_a_path_parameter_is_refused_when_the_driver_is_built() -> None:
    def adapter(item_id: int = Path(...)) -> None:
        ...

    with pytest.raises(TypeError, match=r"no path parameters; use Query\(\)"):
        readers_for(adapter)


def test_an_annotation_that_does_not_evaluate_costs_only_itself() -> None:
    # As in a replica, where a function shipped by value lacks the names of its annotations.
    def adapter(n: int, req: NoSuchType) -> AlsoMissing:  # type: ignore[name-defined]  # noqa: F821
        ...

    req = request("n=2")
    assert read(adapter, req) == [2, req]
