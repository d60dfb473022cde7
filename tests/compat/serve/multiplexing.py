# compat: topic doc/source/serve/model-multiplexing.md
"""Model multiplexing: a replica loads models by id on demand and keeps a few; the model id
comes from handle.options(multiplexed_model_id=...) or the serve_multiplexed_model_id header."""

import ray
import requests
from ray import serve

ray.init(num_cpus=2)


class Model:
    def __init__(self, model_id):
        self.model_id = model_id

    def predict(self, x):
        return f"{self.model_id}:{x}"


@serve.deployment
class Models:
    def __init__(self):
        self.loads = []

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str):
        self.loads.append(model_id)
        return Model(model_id)

    async def predict(self, x):
        model = await self.get_model(serve.get_multiplexed_model_id())
        return model.predict(x)

    def loaded(self):
        return list(self.loads)

    async def __call__(self, request):
        model = await self.get_model(serve.get_multiplexed_model_id())
        return model.predict(request.query_params["x"])


handle = serve.run(Models.bind())

assert handle.options(multiplexed_model_id="a").predict.remote(1).result() == "a:1"
assert handle.options(multiplexed_model_id="b").predict.remote(2).result() == "b:2"
assert handle.options(multiplexed_model_id="a").predict.remote(3).result() == "a:3"
assert handle.loaded.remote().result() == ["a", "b"]  # "a" was kept, not loaded again

# A third model evicts the least recently used one ("b"); asking for "b" loads it again.
handle.options(multiplexed_model_id="c").predict.remote(4).result()
handle.options(multiplexed_model_id="b").predict.remote(5).result()
assert handle.loaded.remote().result() == ["a", "b", "c", "b"]

reply = requests.get("http://127.0.0.1:8000/", params={"x": "9"},
                     headers={"serve_multiplexed_model_id": "c"}, timeout=30)
assert reply.text == "c:9", reply.text

serve.shutdown()
ray.shutdown()
print("multiplexing ok")
