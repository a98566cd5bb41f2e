"""The OpenAI-compatible server (tinylm.deploy.server), talked to with the real openai client on
127.0.0.1, serving a tiny random decoder with SmolLM2's tokenizer and chat template."""

import http.client
import json
import threading
import time

import pytest
import torch

import tinylm
from tinylm.deploy.batching import Engine
from tinylm.deploy.server import Detokenizer, ServerThread, make_app, percentile
from tinylm.inference.sampling import GREEDY
from tinylm.models.transformer import DecoderLM, TransformerConfig
from tinylm.pretrained.smollm2 import chat_prompt, stored_chat_template
from tinylm.tokenizers.bpe import smollm2

openai = pytest.importorskip("openai")

NAME = "tiny-test"
END_OF_TURN = 2                        # SmolLM2's <|im_end|>


class SlowDecoder(DecoderLM):
    """A decoder whose forward pass can be made to take a while (to disconnect mid-stream)."""

    delay = 0.0

    def forward(self, ids, state=None, need_weights=False):
        if self.delay:
            time.sleep(self.delay)
        return super().forward(ids, state, need_weights)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=49152, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, max_len=192,
                               norm="rms", positions="rotary", mlp="swiglu", bias=False, eos_id=END_OF_TURN)
    model = SlowDecoder(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    tokenizer, template = smollm2(), stored_chat_template()
    engine = Engine(model, max_batch=4)
    with ServerThread(make_app(engine, NAME, tokenizer, template)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=30)
        yield model, tokenizer, template, engine, server, client
    assert not engine.alive                   # the app stopped the engine it started


def alone(model, tokenizer, prompt_ids, n):
    return tokenizer.decode(tinylm.generate(model, prompt_ids, n, GREEDY, stop=END_OF_TURN))


MESSAGES = [{"role": "user", "content": "What is continuous batching?"}]


def test_models_are_listed(setup):
    *_, client = setup
    assert [m.id for m in client.models.list().data] == [NAME]


def test_a_completion_streamed_and_not_equals_generating_alone(setup):
    model, tokenizer, *_, client = setup
    prompt = "The cat sat on"
    whole = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0)
    expected = alone(model, tokenizer, tokenizer.encode(prompt), 12)
    assert whole.choices[0].text == expected and whole.choices[0].finish_reason == "length"
    assert whole.usage.prompt_tokens == len(tokenizer.encode(prompt)) and whole.usage.completion_tokens == 12
    parts = list(client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts) == expected
    assert parts[-1].choices[0].finish_reason == "length"


def test_a_chat_completion_streamed_and_not_equals_generating_alone(setup):
    model, tokenizer, template, *_, client = setup
    ids = tokenizer.encode(chat_prompt(MESSAGES, template))
    whole = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=20, temperature=0)
    expected = alone(model, tokenizer, ids, 20)
    assert whole.choices[0].message.content == expected and whole.choices[0].message.role == "assistant"
    assert whole.usage.prompt_tokens == len(ids) and whole.object == "chat.completion"
    stream = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    parts = list(stream)
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == expected
    assert [p.choices[0].finish_reason for p in parts if p.choices][-1] == whole.choices[0].finish_reason
    assert parts[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_stop_string_ends_the_answer_before_it(setup):
    model, tokenizer, *_, client = setup
    prompt = "The cat sat on"
    expected = alone(model, tokenizer, tokenizer.encode(prompt), 12)
    stop = expected[5:8]
    for stream in (False, True):
        got = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0, stop=stop,
                                        stream=stream)
        text = "".join(p.choices[0].text for p in got) if stream else got.choices[0].text
        assert text == expected[: expected.index(stop)]


def post(server, path, body: str) -> http.client.HTTPResponse:
    """POST raw text (the openai client only sends valid JSON); the response, still open."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/v1" + path, body=body.encode(), headers={"Content-Type": "application/json"})
    return connection.getresponse()


BAD = [   # (what, body, status, param)
    ("malformed JSON", '{"model": "tiny-test", "prompt": "hi"', 400, None),
    ("not an object", '[1, 2]', 400, None),
    ("wrong model", {"model": "gpt-4", "prompt": "hi"}, 404, "model"),
    ("max_tokens 0", {"model": NAME, "prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens negative", {"model": NAME, "prompt": "hi", "max_tokens": -5}, 400, "max_tokens"),
    ("max_tokens too large", {"model": NAME, "prompt": "hi", "max_tokens": 5000}, 400, "max_tokens"),
    ("prompt longer than the context", {"model": NAME, "prompt": "cat " * 400, "max_tokens": 4}, 400, "prompt"),
    ("unknown field", {"model": NAME, "prompt": "hi", "frobnicate": 1}, 400, "frobnicate"),
    ("wrong type", {"model": NAME, "prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens"),
    ("a boolean for a number", {"model": NAME, "prompt": "hi", "temperature": True}, 400, "temperature"),
    ("missing prompt", {"model": NAME}, 400, "prompt"),
]


@pytest.mark.parametrize("what, body, status, param", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_openais_error_json_and_the_server_keeps_serving(setup, what, body, status, param):
    model, tokenizer, template, engine, server, client = setup
    response = post(server, "/completions", body if isinstance(body, str) else json.dumps(body))
    assert response.status == status
    error = json.loads(response.read())["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["param"] == param
    assert client.completions.create(model=NAME, prompt="hi", max_tokens=2, temperature=0).choices[0].text is not None


def test_the_openai_client_raises_its_own_errors(setup):
    *_, client = setup
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "cat " * 300}])
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model=NAME, messages=[{"role": "robot", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="Unrecognized"):
        client.chat.completions.create(model=NAME, messages=MESSAGES, extra_body={"best_of": 3})
    assert client.models.list().data


def test_a_client_that_disconnects_mid_stream_frees_its_slot(setup):
    model, tokenizer, template, engine, server, client = setup
    model.delay = 0.05                            # 150 tokens would take 7.5 s
    try:
        body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 150, "temperature": 0, "stream": True,
                "ignore_eos": True}
        response = post(server, "/completions", json.dumps(body))
        chunks = [response.readline() for _ in range(6)]
        assert engine.n_running == 1
        response.close()                          # the client goes away mid-stream
        assert any(line.startswith(b"data: {") for line in chunks)
        deadline = time.monotonic() + 2.5
        while engine.n_running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.n_running == 0 and engine.n_waiting == 0      # cancelled, long before it would end
    finally:
        model.delay = 0.0
    assert client.completions.create(model=NAME, prompt="hi", max_tokens=2, temperature=0).choices


def test_concurrent_clients_get_the_answers_they_would_get_one_at_a_time(setup):
    model, tokenizer, template, engine, server, client = setup
    questions = [f"Question {i}: what is {i} plus {i}?" for i in range(6)]
    expected = [alone(model, tokenizer, tokenizer.encode(chat_prompt([{"role": "user", "content": q}], template)),
                      8 + i) for i, q in enumerate(questions)]
    got, before = {}, max(engine.trace, default=0)
    engine.trace.clear()

    def ask(i):
        answer = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": questions[i]}],
                                                max_tokens=8 + i, temperature=0)
        got[i] = answer.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [got.get(i) for i in range(len(questions))] == expected
    assert max(engine.trace) <= 4 and before >= 0


def test_the_detokenizer_releases_whole_characters_and_holds_back_a_possible_stop():
    tokenizer = smollm2()
    text = "连续批处理 serves many requests at once: 吞吐量!"
    ids = tokenizer.encode(text)
    out = Detokenizer(tokenizer)
    pieces = [out.push(t) for t in ids] + [out.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    held = Detokenizer(tokenizer, stops=["requests at"])
    pieces = [held.push(t) for t in ids]
    assert held.stopped and "".join(pieces) == text[: text.index("requests at")] and held.flush() == ""


def test_percentile_interpolates_like_numpy():
    values = [0.3, 1.0, 0.2, 5.0, 0.7]
    assert percentile(values, 50) == pytest.approx(0.7)
    assert percentile(values, 95) == pytest.approx(1.0 + 0.8 * 4.0)
    assert percentile([2.0], 95) == 2.0


def test_an_unknown_path_or_method_gets_the_error_json_too(setup):
    *_, server, client = setup
    for method, path, status in (("GET", "/v1/nothing", 404), ("POST", "/v1/models", 405)):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request(method, path)
        response = connection.getresponse()
        assert response.status == status
        assert set(json.loads(response.read())["error"]) == {"message", "type", "param", "code"}
