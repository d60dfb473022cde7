# compat: topic doc/source/serve/http-guide.md (FastAPI app builder passed to serve.ingress)
"""serve.ingress given a function that builds the FastAPI app (an app factory), and a
composed deployment reached from a FastAPI route."""

import ray
import requests
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

ray.init(num_cpus=4)


def build_app():
    api = FastAPI()

    @api.get("/status")
    def status():
        return {"ok": True}

    return api


@serve.deployment
class Doubler:
    def __call__(self, x):
        return 2 * x


@serve.deployment
@serve.ingress(build_app)
class Api:
    def __init__(self, doubler: DeploymentHandle):
        self.doubler = doubler


serve.run(Api.bind(Doubler.bind()))
reply = requests.get("http://127.0.0.1:8000/status", timeout=30)
assert reply.status_code == 200 and reply.json() == {"ok": True}, reply.text
assert requests.get("http://127.0.0.1:8000/nothing", timeout=30).status_code == 404

serve.shutdown()
ray.shutdown()
print("fastapi factory ok")
