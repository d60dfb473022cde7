# compat: topic doc/source/serve/model_composition.md (passing a DeploymentResponse to another call)
"""Passing the response of one handle call straight into another, b.remote(a.remote(x)):
Serve resolves it to its value before the second call runs, and an error in the first call
reaches the caller of the second."""

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

ray.init(num_cpus=4)


@serve.deployment
class Tokenize:
    def __call__(self, text):
        if not text:
            raise ValueError("nothing to tokenize")
        return text.split()


@serve.deployment
class Count:
    def __call__(self, tokens):
        # The argument arrives as the value, not as a response object.
        assert isinstance(tokens, list), type(tokens)
        return len(tokens)


@serve.deployment
class Chain:
    def __init__(self, tokenize: DeploymentHandle, count: DeploymentHandle):
        self.tokenize = tokenize
        self.count = count

    async def __call__(self, text):
        return await self.count.remote(self.tokenize.remote(text))


handle = serve.run(Chain.bind(Tokenize.bind(), Count.bind()))
assert handle.remote("the quick brown fox").result() == 4

# From the driver too: the response of one app's handle passed to another handle.
tokenize = serve.get_deployment_handle("Tokenize", app_name="default")
count = serve.get_deployment_handle("Count", app_name="default")
assert count.remote(tokenize.remote("a b c")).result() == 3

try:
    handle.remote("").result()
except ValueError as error:
    assert "nothing to tokenize" in str(error)
else:
    raise AssertionError("the first call's error did not reach the caller")

serve.shutdown()
ray.shutdown()
print("response chaining ok")
