# compat: topic doc/source/serve/multi-app.md (several applications, get_app_handle)
"""Two applications side by side under their own route prefixes, reached by name with
serve.get_app_handle and serve.get_deployment_handle."""

import ray
import requests
from ray import serve

ray.init(num_cpus=4)


@serve.deployment
class Upper:
    def __call__(self, text):
        if not isinstance(text, str):  # an HTTP request
            text = text.query_params["text"]
        return text.upper()


@serve.deployment
class Reverse:
    def __call__(self, text):
        if not isinstance(text, str):
            text = text.query_params["text"]
        return text[::-1]


serve.run(Upper.bind(), name="upper", route_prefix="/upper")
serve.run(Reverse.bind(), name="reverse", route_prefix="/reverse")

assert serve.get_app_handle("upper").remote("abc").result() == "ABC"
assert serve.get_deployment_handle("Reverse", app_name="reverse").remote("abc").result() == "cba"

base = "http://127.0.0.1:8000"
assert requests.get(f"{base}/upper", params={"text": "hi"}, timeout=30).text == "HI"
assert requests.get(f"{base}/reverse", params={"text": "hi"}, timeout=30).text == "ih"
assert requests.get(f"{base}/missing", timeout=30).status_code == 404

assert set(serve.status().applications) == {"upper", "reverse"}

serve.shutdown()
ray.shutdown()
print("apps and handles ok")
