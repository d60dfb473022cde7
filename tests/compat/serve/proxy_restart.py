# compat: topic doc/source/serve/production-guide/fault-tolerance.md (proxy failure)
# compat: expect proxy came back
# compat: timeout 180
"""The HTTP proxy's process is killed (the OOM killer, say): serve starts a new proxy on the
same port, and requests are answered again without redeploying anything."""

import os
import signal
import time

import psutil
import ray
import requests
from ray import serve

ray.init(num_cpus=2)


@serve.deployment
def hello(request=None):
    return "hello"


serve.run(hello.bind())
assert requests.get("http://127.0.0.1:8000/", timeout=30).text == "hello"

[proxy_pid] = {c.pid for c in psutil.net_connections(kind="tcp")
               if c.laddr and c.laddr.port == 8000 and c.status == psutil.CONN_LISTEN}
os.kill(proxy_pid, signal.SIGKILL)

deadline = time.monotonic() + 120
answer = None
while time.monotonic() < deadline:
    try:
        answer = requests.get("http://127.0.0.1:8000/", timeout=5).text
        if answer == "hello":
            break
    except requests.RequestException:
        pass
    time.sleep(0.5)
assert answer == "hello", answer

serve.shutdown()
ray.shutdown()
print("proxy came back")
