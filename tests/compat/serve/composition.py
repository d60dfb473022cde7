# compat: topic doc/source/serve/model_composition.md (calling deployments from deployments)
"""Model composition: an ingress deployment holds handles to two other deployments, bound into
one application, and awaits their responses."""

import asyncio

import ray
import requests
from ray import serve
from ray.serve.handle import DeploymentHandle

ray.init(num_cpus=4)


@serve.deployment
class Adder:
    def __init__(self, increment):
        self.increment = increment

    def add(self, x):
        return x + self.increment


@serve.deployment
class Multiplier:
    def __init__(self, factor):
        self.factor = factor

    def multiply(self, x):
        return x * self.factor


@serve.deployment
class Pipeline:
    def __init__(self, adder: DeploymentHandle, multiplier: DeploymentHandle):
        self.adder = adder
        self.multiplier = multiplier

    async def compute(self, x):
        added = await self.adder.add.remote(x)
        return await self.multiplier.multiply.remote(added)

    async def fan_out(self, xs):
        # Many calls in flight at once, gathered.
        responses = [self.adder.add.remote(x) for x in xs]
        return list(await asyncio.gather(*responses))

    async def __call__(self, request):
        x = int(request.query_params["x"])
        return str(await self.compute(x))


app = Pipeline.bind(Adder.bind(2), Multiplier.bind(10))
handle = serve.run(app)

assert handle.compute.remote(1).result() == 30
assert handle.fan_out.remote([1, 2, 3]).result() == [3, 4, 5]
assert requests.get("http://127.0.0.1:8000/", params={"x": 5}, timeout=30).text == "70"

serve.shutdown()
ray.shutdown()
print("composition ok")
