"""``@serve.ingress(FastAPI app)`` with methods of the deployment class as route handlers.

No ``from __future__ import annotations`` here: the pydantic model and the handlers are defined
inside the test (so that they ship to the replica by value), and FastAPI reads their annotations
as objects.
"""

from typing import Any

import httpx
import pytest

from ember import serve


@pytest.mark.usefixtures("serve_instance")
def test_class_methods_are_fastapi_handlers() -> None:
    from fastapi import FastAPI, Request
    from pydantic import BaseModel

    class Item(BaseModel):
        name: str
        price: float
        tags: list[str] = []

    app = FastAPI()

    @app.get("/echo")
    def echo(request: Request, word: str = "hi") -> dict[str, Any]:  # a plain function
        return {"word": word, "store": request.scope["ember_serve_replica"].store}

    @serve.deployment
    @serve.ingress(app)
    class Shop:
        def __init__(self, store: str) -> None:
            self.store = store
            self.items: dict[int, Item] = {}

        @app.post("/items/{item_id}", status_code=201)
        async def put(self, item_id: int, item: Item) -> dict[str, Any]:
            self.items[item_id] = item
            return {"id": item_id, "count": len(self.items), "store": self.store}

        @app.get("/items/{item_id}")
        def get(self, item_id: int, currency: str = "EUR") -> dict[str, Any]:
            item = self.items[item_id]
            return {"name": item.name, "price": f"{item.price:.2f} {currency}",
                    "tags": item.tags}

    serve.run(Shop.bind("north"), route_prefix="/shop", port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}/shop"
    with httpx.Client(timeout=20) as client:
        created = client.post(f"{base}/items/7", json={"name": "lamp", "price": 12.5})
        assert created.status_code == 201
        assert created.json() == {"id": 7, "count": 1, "store": "north"}
        assert client.post(f"{base}/items/8", json={"name": "rug", "price": 3,
                                                    "tags": ["red"]}).json()["count"] == 2
        assert client.get(f"{base}/items/7").json() == {
            "name": "lamp", "price": "12.50 EUR", "tags": []}
        assert client.get(f"{base}/items/8?currency=USD").json()["price"] == "3.00 USD"
        assert client.get(f"{base}/echo?word=yo").json() == {"word": "yo", "store": "north"}

        missing = client.post(f"{base}/items/9", json={"name": "no price"})
        assert missing.status_code == 422
        assert missing.json()["detail"][0]["loc"] == ["body", "price"]
        malformed = client.post(f"{base}/items/9", content=b"{not json",
                                headers={"content-type": "application/json"})
        assert malformed.status_code == 422
        assert client.get(f"{base}/items/seven").status_code == 422  # path param is an int
        assert client.get(f"{base}/nowhere").status_code == 404

        schema = client.get(f"{base}/openapi.json").json()
        names = {p["name"] for p in schema["paths"]["/items/{item_id}"]["get"]["parameters"]}
        assert names == {"item_id", "currency"}  # self is not a parameter clients see


def test_method_routes_refuse_to_run_outside_a_replica() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()

    @serve.ingress(app)
    class Api:
        @app.get("/")
        def root(self) -> str:
            return "unreachable"

    with pytest.raises(RuntimeError, match="only inside a replica"):
        TestClient(app).get("/")


@pytest.mark.usefixtures("serve_instance")
def test_ingress_takes_an_app_factory_called_in_each_replica() -> None:
    import os
    import threading

    from fastapi import FastAPI

    def build_app() -> FastAPI:
        app = FastAPI()
        lock = threading.Lock()  # cannot be pickled: the app is built where it runs
        built_in = os.getpid()

        @app.get("/info")
        def info() -> dict[str, Any]:
            with lock:
                return {"built_in": built_in, "served_in": os.getpid()}

        @app.get("/text")
        def text() -> str:
            return "plain"

        return app

    @serve.deployment
    @serve.ingress(build_app)
    class Api:
        pass

    standalone = FastAPI()

    @standalone.get("/hi")
    def say_hi() -> str:
        return "Hello world!"

    serve.run(Api.bind(), name="factory", route_prefix="/factory", port=0)
    # Ray's other form: serve.ingress(app)() makes the class around a standalone app.
    serve.run(serve.deployment(serve.ingress(standalone)()).bind(), name="standalone",
              route_prefix="/standalone", port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}"
    with httpx.Client(timeout=20) as client:
        info = client.get(f"{base}/factory/info").json()
        assert info["built_in"] == info["served_in"] != os.getpid()
        # FastAPI encodes what routes return, as FastAPI would: a str is a JSON string.
        text = client.get(f"{base}/factory/text")
        assert text.headers["content-type"] == "application/json"
        assert text.text == '"plain"'
        assert client.get(f"{base}/standalone/hi").json() == "Hello world!"


def test_an_ingress_factory_must_return_an_app() -> None:
    from ember.serve._deployment import AsgiIngress

    with pytest.raises(TypeError, match="not an ASGI app"):
        AsgiIngress(lambda: 42, factory=True).build()
