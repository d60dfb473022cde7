# compat: topic doc/source/serve/http-guide.md (FastAPI HTTP deployments)
"""A FastAPI app as a deployment's ingress: path and query parameters, a pydantic body, status
codes and FastAPI's own JSON encoding of return values, under a route prefix."""

import ray
import requests
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from ray import serve

ray.init(num_cpus=2)

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    quantity: int = 1


@serve.deployment
@serve.ingress(app)
class Shop:
    def __init__(self):
        self.items = {}

    @app.get("/hello")
    def hello(self, name: str = "world"):
        return f"hello {name}"

    @app.post("/items/{item_id}")
    def put(self, item_id: int, item: Item):
        self.items[item_id] = item
        return {"id": item_id, "total": item.price * item.quantity}

    @app.get("/items/{item_id}")
    def get(self, item_id: int):
        if item_id not in self.items:
            raise HTTPException(status_code=404, detail=f"no item {item_id}")
        return self.items[item_id]


serve.run(Shop.bind(), route_prefix="/shop")
base = "http://127.0.0.1:8000/shop"

reply = requests.get(f"{base}/hello", params={"name": "serve"}, timeout=30)
assert reply.status_code == 200
assert reply.json() == "hello serve"  # FastAPI sends a returned str as a JSON string

reply = requests.post(f"{base}/items/7", json={"name": "pen", "price": 1.5, "quantity": 4},
                      timeout=30)
assert reply.json() == {"id": 7, "total": 6.0}, reply.text
assert requests.get(f"{base}/items/7", timeout=30).json() == {
    "name": "pen", "price": 1.5, "quantity": 4}

missing = requests.get(f"{base}/items/8", timeout=30)
assert missing.status_code == 404 and missing.json() == {"detail": "no item 8"}
invalid = requests.post(f"{base}/items/9", json={"name": "cup"}, timeout=30)
assert invalid.status_code == 422, invalid.status_code

serve.shutdown()
ray.shutdown()
print("fastapi ingress ok")
