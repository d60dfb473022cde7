"""The OpenAI-compatible app, driven by the real ``openai`` client over HTTP.

One serve instance for the module, started the way users start it from a config file
(``ember serve run config.yaml``): ``llm`` (both models on one replica) at ``/`` and ``pool``
(two replicas holding one model each, one sequence at a time, no queue) at ``/pool``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import ember
from ember import serve
from ember.serve._cli import main
from ember.testing import LeakCheck, eventually

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")

CONFIG = """
http_options: {{host: 127.0.0.1, port: 0}}
applications:
  - name: llm
    route_prefix: /
    import_path: ember.serve.llm:build_openai_app
    args:
      models: {{base: {base}, tuned: {tuned}}}
      max_num_seqs: 8
  - name: pool
    route_prefix: /pool
    import_path: ember.serve.llm:build_openai_app
    args:
      models: {{base: {base}, tuned: {tuned}}}
      num_replicas: 2
      max_models_per_replica: 1
      max_num_seqs: 1
      max_waiting: 0
"""


@pytest.fixture(scope="module")
def port(tiny_gpt2: str, tuned_gpt2: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[int]:
    config = tmp_path_factory.mktemp("config") / "serve.yaml"
    config.write_text(CONFIG.format(base=tiny_gpt2, tuned=tuned_gpt2))
    ember.init(num_cpus=2)
    try:
        assert main(["run", str(config), "--non-blocking"]) == 0
        yield int(serve.status().http_port)  # type: ignore[arg-type]
    finally:
        serve.shutdown()
        LeakCheck().check()


@pytest.fixture
def client(port: int) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                       max_retries=0, timeout=60) as client:
        yield client


def model_greedy(path: str, prompt: str, n: int) -> str:
    """What ``model.generate`` makes of ``prompt``, greedy, in this process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
    return str(tokenizer.decode(out[0, ids.shape[1]:]))


def stats(app: str = "llm", model: str = "") -> dict[str, Any]:
    handle = serve.get_deployment_handle("LLMServer", app)
    return dict(handle.options(multiplexed_model_id=model).stats.remote().result(timeout_s=30))


def held(app: str, model: str, check: Any = bool) -> Any:
    """The stats of ``model`` from the replica that holds it, once ``check`` accepts them.

    A ``stats`` call is routed by what this process's router knows of where each model is;
    that comes from the controller's poll, so right after the proxy placed a model the call
    may still land on a replica without it: ask until the holder answers."""
    def answer() -> Any:
        found = stats(app, model).get(model)
        return found if found is not None and check(found) else None
    return eventually(answer, timeout=60, what=f"{model!r}'s stats in {app!r} to pass {check}")


GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}


def test_list_models(client: Any) -> None:
    assert [m.id for m in client.models.list()] == ["base", "tuned"]
    assert client.models.retrieve("tuned").id == "tuned"


def test_a_completion_is_what_the_model_generates(client: Any, tiny_gpt2: str) -> None:
    answer = client.completions.create(model="base", prompt="Hello", max_tokens=12, **GREEDY)
    assert answer.choices[0].text == model_greedy(tiny_gpt2, "Hello", 12)
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 12)
    assert answer.model == "base" and answer.object == "text_completion"


def test_the_model_field_picks_the_model(client: Any, tuned_gpt2: str) -> None:
    base = client.completions.create(model="base", prompt="Hello", max_tokens=12, **GREEDY)
    tuned = client.completions.create(model="tuned", prompt="Hello", max_tokens=12, **GREEDY)
    assert tuned.choices[0].text == model_greedy(tuned_gpt2, "Hello", 12)
    assert tuned.choices[0].text != base.choices[0].text


def test_a_chat_completion_uses_the_plain_template(client: Any, tiny_gpt2: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    answer = client.chat.completions.create(model="base", messages=messages, max_tokens=10,
                                            **GREEDY)
    prompt = "system: Be brief.\nuser: Hi\nassistant:"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == model_greedy(tiny_gpt2, prompt, 10)
    assert answer.usage.prompt_tokens == len(prompt.encode())
    assert answer.usage.total_tokens == len(prompt.encode()) + 10


def test_a_streamed_chat_arrives_token_by_token(client: Any) -> None:
    messages = [{"role": "user", "content": "Tell me a story"}]
    whole = client.chat.completions.create(model="tuned", messages=messages, max_tokens=24,
                                           **GREEDY).choices[0].message.content
    stream = client.chat.completions.create(model="tuned", messages=messages, max_tokens=24,
                                            stream=True, stream_options={"include_usage": True},
                                            **GREEDY)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    assert "".join(pieces) == whole
    # streamed as it was generated, not in one piece at the end (a reader that falls behind
    # gets what came meanwhile in one chunk: not all 24 need be apart)
    assert len(pieces) >= 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24


def test_the_raw_stream_is_server_sent_events_ending_with_done(port: int) -> None:
    body = {"model": "base", "prompt": "Hi", "max_tokens": 4, "stream": True}
    with httpx.Client(timeout=60) as http, http.stream(
            "POST", f"http://127.0.0.1:{port}/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("length", "stop")


def test_an_unknown_model_is_a_404(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-9", prompt="Hi")
    assert caught.value.body["code"] == "model_not_found"
    assert "base, tuned" in caught.value.body["message"]


def test_bad_requests_are_400_naming_the_field(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="base", prompt="Hi", temperature=5)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError, match="ask for at most"):
        client.completions.create(model="base", prompt="Hi", max_tokens=100_000)
    with pytest.raises(openai.BadRequestError, match="ask for at most"):  # before any event
        client.completions.create(model="base", prompt="Hi", max_tokens=100_000, stream=True)


@pytest.mark.parametrize("app", ["llm", "pool"])  # HTTP and engine in one replica, or not
def test_a_client_that_closes_the_stream_takes_its_sequence_out_of_the_batch(
        port: int, app: str) -> None:
    prefix = "" if app == "llm" else "/pool"
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}{prefix}/v1", api_key="none",
                       max_retries=0, timeout=60) as client:
        client.completions.create(model="base", prompt="Hi", max_tokens=2, **GREEDY)
        before = held(app, "base")
        stream = client.completions.create(model="base", prompt="Once", max_tokens=480,
                                           stream=True, **GREEDY)
        for n, _ in enumerate(stream):
            if n == 2:
                break
        stream.close()
    # the server's generator ran its finally: the sequence left the batch before its end
    after = held(app, "base", lambda s: s.aborted > before.aborted)
    assert after.aborted == before.aborted + 1
    assert after.running == 0
    assert after.generated_tokens - before.generated_tokens < 480


def test_several_replicas_serve_each_model_where_it_is_loaded(port: int) -> None:
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/pool/v1", api_key="none",
                       max_retries=0, timeout=60) as pool:
        for model in ("base", "tuned"):
            pool.completions.create(model=model, prompt="Hi", max_tokens=3, **GREEDY)
        before = {model: held("pool", model).finished for model in ("base", "tuned")}
        for model in ("base", "tuned", "base", "tuned", "base"):
            pool.completions.create(model=model, prompt="Hi", max_tokens=3, **GREEDY)
    # one model per replica: had a request gone to the other replica, it would have evicted
    # that replica's model and loaded its own (its count would start again from 0)
    for model, count in (("base", 3), ("tuned", 2)):
        assert held("pool", model, lambda s, m=model, c=count: s.finished >= before[m] + c
                    ).finished == before[model] + count
        assert set(eventually(lambda m=model: m in (s := stats("pool", m)) and s)) == {model}


def test_an_overloaded_model_answers_503_with_retry_after(port: int) -> None:
    body = {"model": "tuned", "prompt": "Hi", "max_tokens": 500, "stream": True,
            "ignore_eos": True}
    url = f"http://127.0.0.1:{port}/pool/v1/completions"
    with httpx.Client(timeout=60) as http:
        for _ in range(3):  # the tiny model may finish 500 tokens before the second request
            with http.stream("POST", url, json=body) as busy:  # arrives on a loaded machine
                next(busy.iter_lines())  # it runs: the engine's one place is taken, no queue
                refused = http.post(url, json={**body, "stream": False, "max_tokens": 2})
            if refused.status_code != 200:
                break
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "overloaded" and "max_waiting=0" in error["message"]
