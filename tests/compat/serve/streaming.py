# compat: topic doc/source/serve/tutorials/streaming.md (streaming responses)
"""Streaming: a generator method streamed through a handle with stream=True, and a
Starlette StreamingResponse read chunk by chunk over HTTP."""

import ray
import requests
from ray import serve
from starlette.responses import StreamingResponse

ray.init(num_cpus=2)


@serve.deployment
class Counter:
    def count(self, n):
        yield from range(n)

    async def __call__(self, request):
        n = int(request.query_params["n"])

        def numbers():
            for i in range(n):
                yield f"{i}\n"

        return StreamingResponse(numbers(), media_type="text/plain")


handle = serve.run(Counter.bind())

# A streaming call returns a generator of the values as the replica yields them.
assert list(handle.options(stream=True).count.remote(5)) == [0, 1, 2, 3, 4]

with requests.get("http://127.0.0.1:8000/", params={"n": 4}, stream=True, timeout=30) as reply:
    assert reply.status_code == 200
    lines = [line for line in reply.iter_lines(decode_unicode=True) if line]
assert lines == ["0", "1", "2", "3"], lines

serve.shutdown()
ray.shutdown()
print("streaming ok")
