# compat: topic doc/source/serve/configure-serve-deployment.md (user_config and reconfigure)
"""user_config reaches a deployment's reconfigure method when it starts, and deploying the
application again with a new user_config applies it."""

import ray
from ray import serve

ray.init(num_cpus=2)


@serve.deployment(user_config={"threshold": 0.5})
class Classifier:
    def __init__(self):
        self.threshold = None

    def reconfigure(self, config):
        self.threshold = config["threshold"]

    def __call__(self, score):
        return {"label": score >= self.threshold, "threshold": self.threshold}


handle = serve.run(Classifier.bind())
first = handle.remote(0.6).result()
assert first == {"label": True, "threshold": 0.5}

serve.run(Classifier.options(user_config={"threshold": 0.9}).bind())
assert handle.remote(0.6).result() == {"label": False, "threshold": 0.9}

serve.shutdown()
ray.shutdown()
print("user config ok")
