"""An OpenAI-compatible HTTP server on the continuous-batching engine: ``python -m tinylm serve``.

OpenAI's HTTP API has become the common language of language-model servers: vLLM, llama.cpp's
``llama-server`` and Ollama all speak it, so one client (the ``openai`` package, or any HTTP
library) talks to any of them, and a program written against one server runs against another
by changing a URL.  This module speaks the part of it a chat application needs:

- ``GET /v1/models``: the model served;
- ``POST /v1/completions``: text in, continuation out;
- ``POST /v1/chat/completions``: messages in, the assistant's answer out; the messages become
  one prompt through the model's chat template (ChatML for SmolLM2,
  :func:`tinylm.pretrained.smollm2.chat_prompt`), and the answer ends at the end-of-turn token;

each either as one JSON answer or, with ``"stream": true``, as **server-sent events**
(服务器推送事件): lines ``data: {json chunk}`` sent as the tokens are chosen, then
``data: [DONE]``.  Answers carry ``usage`` (prompt and completion token counts) and a
``finish_reason``: ``"stop"`` (the model ended its turn, or a stop string appeared) or
``"length"`` (``max_tokens`` reached).  Bad input gets OpenAI's error JSON, ``{"error":
{"message", "type", "param", "code"}}`` with the right HTTP status, and the server keeps serving.
One extension, from vLLM: ``"ignore_eos": true`` generates exactly ``max_tokens`` tokens (load
tests want answers of a fixed length).

Every request becomes a :class:`tinylm.deploy.batching.Request`; the engine runs on its own thread
and batches whatever is running.  A client that disconnects mid-stream has its request cancelled,
and its slot is free at the next step.

:func:`run` is the study ``python -m tinylm study serving``: a bounded load test on loopback
(1 to 16 concurrent clients) of continuous batching against one request at a time; it writes
``results/serving.json``.
"""


import asyncio
import json
import socket
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..inference.sampling import Sampler

HOST = "127.0.0.1"
"""The only address the server binds: this machine's loopback, never a network."""

DEFAULT_MAX_TOKENS = 16
"""What ``max_tokens`` is when a request does not say (OpenAI's legacy completions default)."""


# ----------------------------------------------------------------------------- errors

class APIError(Exception):
    """A request the server refuses: becomes ``{"error": {...}}`` with HTTP ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# ----------------------------------------------------------------------------- reading a request

_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
          "array": (list,), "object": (dict,)}


def _check(body: dict, name: str, kinds: Sequence[str], required: bool = False, default=None):
    """The field ``name`` of the body, checked against the JSON types ``kinds`` (None allowed
    when not required)."""
    if name not in body or body[name] is None:
        if required:
            raise APIError(400, f"you must provide a '{name}' parameter", name, "missing_required_parameter")
        return default
    value = body[name]
    ok = any(isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool))
             for k in kinds)
    if not ok:
        raise APIError(400, f"invalid type for '{name}': expected {' or '.join(kinds)}, got "
                            f"{type(value).__name__} ({json.dumps(value)[:40]})", name, "invalid_type")
    return value


COMMON_FIELDS = {"model", "max_tokens", "temperature", "top_p", "stream", "stream_options", "stop", "seed", "n",
                 "user", "ignore_eos"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt"}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "max_completion_tokens"}


@dataclass
class Settings:
    """A request's parameters, checked."""

    max_tokens: int
    sampler: Sampler
    stream: bool
    include_usage: bool
    stops: list[str]
    ignore_eos: bool


def read_settings(body: dict, allowed: set[str], model_name: str) -> Settings:
    """Check the fields every request shares; raise :class:`APIError` for the first bad one."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter")
    model = _check(body, "model", ["string"], required=True)
    if model != model_name:
        raise APIError(404, f"The model '{model}' does not exist; this server serves '{model_name}'", "model",
                       "model_not_found")
    max_tokens = _check(body, "max_completion_tokens", ["integer"])
    max_tokens = _check(body, "max_tokens", ["integer"], default=max_tokens if max_tokens is not None
                        else DEFAULT_MAX_TOKENS)
    if max_tokens < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}", "max_tokens", "invalid_value")
    temperature = _check(body, "temperature", ["number"], default=1.0)
    if not 0 <= temperature <= 2:
        raise APIError(400, f"temperature must be between 0 and 2, got {temperature}", "temperature", "invalid_value")
    top_p = _check(body, "top_p", ["number"], default=1.0)
    if not 0 < top_p <= 1:
        raise APIError(400, f"top_p must be in (0, 1], got {top_p}", "top_p", "invalid_value")
    n = _check(body, "n", ["integer"], default=1)
    if n != 1:
        raise APIError(400, f"this server returns one choice per request (n=1), got n={n}", "n", "invalid_value")
    seed = _check(body, "seed", ["integer"], default=0)
    stream = _check(body, "stream", ["boolean"], default=False)
    options = _check(body, "stream_options", ["object"], default={})
    if set(options) - {"include_usage"}:
        raise APIError(400, f"Unrecognized stream option: {sorted(set(options) - {'include_usage'})[0]}",
                       "stream_options", "unknown_parameter")
    include_usage = _check(options, "include_usage", ["boolean"], default=False)
    stops = _check(body, "stop", ["string", "array"], default=[])
    stops = [stops] if isinstance(stops, str) else stops
    if not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise APIError(400, "stop must be a string or a list of up to 4 non-empty strings", "stop", "invalid_value")
    _check(body, "user", ["string"])
    ignore_eos = _check(body, "ignore_eos", ["boolean"], default=False)
    sampler = Sampler(temperature=float(temperature), top_p=None if top_p == 1 else float(top_p), seed=seed)
    return Settings(max_tokens, sampler, stream, include_usage, stops, ignore_eos)


def read_messages(body: dict) -> list[dict[str, str]]:
    """The chat's messages, checked: a non-empty list of ``{"role", "content"}`` with text content."""
    messages = _check(body, "messages", ["array"], required=True)
    if not messages:
        raise APIError(400, "messages must hold at least one message", "messages", "invalid_value")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise APIError(400, f"{where} must be an object with 'role' and 'content'", where, "invalid_type")
        role = _check(message, "role", ["string"], required=True)
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"{where}.role must be system, user or assistant, got {role!r}", f"{where}.role",
                           "invalid_value")
        content = _check(message, "content", ["string", "array"], required=True)
        if isinstance(content, list):          # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise APIError(400, f"{where}.content: only text parts are supported", f"{where}.content",
                               "invalid_value")
            content = "".join(p["text"] for p in content)
        out.append({"role": role, "content": content})
    return out


# ----------------------------------------------------------------------------- tokens to text

class Detokenizer:
    """Turns the tokens of an answer into text as they come.

    A byte-level BPE token may end in the middle of a UTF-8 character (a Chinese character is 3
    bytes and may be split across tokens), so text is released only up to the last complete
    character; and text that could be the start of a stop string is held back until it is
    clear.  :meth:`push` returns the new text to send; :attr:`stopped` says a stop string was
    found (the text ends before it)."""

    def __init__(self, tokenizer, stops: Sequence[str] = ()):
        self.tokenizer, self.stops = tokenizer, list(stops)
        self.ids: list[int] = []
        self.sent = 0                     # characters already released
        self.stopped = False

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids)

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self._text()
        for stop in self.stops:
            at = text.find(stop)
            if at >= 0:
                self.stopped = True
                return self._release(text[:at])
        safe = len(text.rstrip("\ufffd"))           # an incomplete character decodes to U+FFFD
        for stop in self.stops:                     # hold back a possible beginning of a stop string
            for k in range(min(len(stop) - 1, safe), 0, -1):
                if text[:safe].endswith(stop[:k]):
                    safe -= k
                    break
        return self._release(text[:safe])

    def flush(self) -> str:
        """The text still held back, at the end of the answer."""
        return "" if self.stopped else self._release(self._text())

    def _release(self, text: str) -> str:
        new = text[self.sent:] if len(text) > self.sent else ""
        self.sent = max(self.sent, len(text))
        return new


# ----------------------------------------------------------------------------- the app

def make_app(engine, model_name: str, tokenizer, chat_template: str | None = None, max_context: int | None = None):
    """The FastAPI application serving ``engine`` (a :class:`tinylm.deploy.batching.Engine`) as
    ``model_name``.  The engine's thread is started when the app starts (if it is not running)
    and stopped when it stops.  ``chat_template`` (None: SmolLM2's, read from its file) turns
    messages into a prompt; ``max_context`` (default: the engine's) bounds prompt + max_tokens."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi import Request as HTTPRequest
    from fastapi.responses import JSONResponse, StreamingResponse

    from ..pretrained.smollm2 import chat_prompt

    max_context = max_context or engine.max_context
    eos = getattr(getattr(engine.model, "config", None), "eos_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_id", None)

    @asynccontextmanager
    async def lifespan(app):
        started = not engine.alive
        if started:
            engine.start()
        yield
        if started:
            engine.stop()

    app = FastAPI(title="tinylm", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.engine = engine

    def error(exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return error(exc)

    async def http_error(request, exc):               # no such path (404), or not with this method (405)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", None, None, kind))

    app.add_exception_handler(404, http_error)
    app.add_exception_handler(405, http_error)

    @app.exception_handler(Exception)
    async def server_error(request, exc: Exception):
        return error(APIError(500, f"the server failed: {type(exc).__name__}: {exc}", kind="server_error"))

    async def read_body(request: HTTPRequest) -> dict:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"We could not parse the JSON body of your request ({exc}). The body must be "
                                "valid JSON.", None, "invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object", None, "invalid_json")
        return body

    def submit(prompt_ids: list[int], settings: Settings, param: str):
        """Check the length, and hand the request to the engine with a queue that the event loop reads."""
        if len(prompt_ids) >= max_context:
            raise APIError(400, f"This model's maximum context length is {max_context} tokens. However, the "
                                f"{param} {'take' if param == 'messages' else 'takes'} {len(prompt_ids)} tokens. "
                                f"Please reduce the length of the {param}.",
                           param, "context_length_exceeded")
        if settings.max_tokens > max_context - len(prompt_ids):
            raise APIError(400, f"This model's maximum context length is {max_context} tokens. However, you "
                                f"requested {len(prompt_ids) + settings.max_tokens} tokens ({len(prompt_ids)} in "
                                f"the {param}, {settings.max_tokens} in the completion). Please reduce the length "
                                f"of the {param} or max_tokens.", "max_tokens", "context_length_exceeded")
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        stop = () if settings.ignore_eos or eos is None else (eos,)
        try:
            request = engine.submit(prompt_ids, settings.max_tokens, settings.sampler, stop,
                                    on_event=lambda t: loop.call_soon_threadsafe(events.put_nowait, t))
        except ValueError as exc:
            raise APIError(400, str(exc), "max_tokens", "invalid_value") from None
        return request, events

    async def tokens(http: HTTPRequest, request, events: asyncio.Queue):
        """The request's tokens as they come; cancels it if the client goes away."""
        try:
            while True:
                try:
                    token = await asyncio.wait_for(events.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    if await http.is_disconnected():
                        return
                    continue
                if token is None:
                    return
                yield token
        finally:
            if not request.done:
                engine.cancel(request)

    def usage(request, n_prompt: int) -> dict:
        n = len(request.tokens)
        return {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}

    def reason(request, text: Detokenizer) -> str:
        return "stop" if text.stopped or request.finish_reason == "stop" else "length"

    async def answer(http: HTTPRequest, prompt_ids: list[int], settings: Settings, chat: bool):
        param = "messages" if chat else "prompt"
        request, events = submit(prompt_ids, settings, param)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{request.id}"
        created = int(time.time())
        head = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                "model": model_name}
        text = Detokenizer(tokenizer, settings.stops)

        def chunk(piece: str | None, finish: str | None = None, role: bool = False) -> str:
            if chat:
                delta = {} if piece is None else ({"role": "assistant", "content": piece} if role else {"content": piece})
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
            data = {**head, "choices": [choice]}
            if settings.include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        if settings.stream:
            async def events_out():
                if chat:
                    yield chunk("", role=True)
                async for token in tokens(http, request, events):
                    piece = text.push(token)
                    if piece:
                        yield chunk(piece)
                    if text.stopped:
                        engine.cancel(request)
                        break
                if not request.done and not text.stopped:
                    return                                   # the client went away
                rest = text.flush()
                if rest:
                    yield chunk(rest)
                yield chunk(None, reason(request, text))
                if settings.include_usage:
                    yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage(request, len(prompt_ids))})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events_out(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        pieces = []
        async for token in tokens(http, request, events):
            pieces.append(text.push(token))
            if text.stopped:
                engine.cancel(request)
                break
        if request.finish_reason == "error":
            raise APIError(500, f"generation failed: {request.error}", kind="server_error")
        content = "".join(pieces) + text.flush()
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                      "finish_reason": reason(request, text)}
        else:
            choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": reason(request, text)}
        head["object"] = "chat.completion" if chat else "text_completion"
        return JSONResponse({**head, "choices": [choice], "usage": usage(request, len(prompt_ids))})

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "tinylm",
                                            "max_model_len": max_context}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "running": engine.n_running, "waiting": engine.n_waiting}

    @app.post("/v1/completions")
    async def completions(http: HTTPRequest):
        body = await read_body(http)
        settings = read_settings(body, COMPLETION_FIELDS, model_name)
        prompt = _check(body, "prompt", ["string", "array"], required=True)
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise APIError(400, "prompt must be a string (or a list of one string)", "prompt", "invalid_value")
            prompt = prompt[0]
        ids = tokenizer.encode(prompt)
        if not ids:
            raise APIError(400, "the prompt is empty", "prompt", "invalid_value")
        return await answer(http, ids, settings, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest):
        body = await read_body(http)
        settings = read_settings(body, CHAT_FIELDS, model_name)
        prompt = chat_prompt(read_messages(body), chat_template)
        return await answer(http, tokenizer.encode(prompt), settings, chat=True)

    return app


# ----------------------------------------------------------------------------- running it

def free_socket(host: str = HOST, port: int = 0) -> socket.socket:
    """A listening-ready TCP socket bound to ``host`` (loopback) at ``port`` (0: any free port)."""
    if host != HOST:
        raise ValueError(f"this server binds only {HOST} (loopback), not {host!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror}); is another server there? "
                         "choose another --port") from None
    return sock


class ServerThread:
    """Uvicorn serving ``app`` on 127.0.0.1 from a background thread (tests, the lab, the study).

        with ServerThread(app) as server:
            client = OpenAI(base_url=server.url, api_key="none")
    """

    def __init__(self, app, port: int = 0):
        import uvicorn

        self.sock = free_socket(HOST, port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}/v1"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="tinylm-server")

    def start(self, timeout: float = 20.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


CLIENT_SNIPPET = '''from openai import OpenAI
client = OpenAI(base_url="{url}", api_key="none")
answer = client.chat.completions.create(model="{model}", max_tokens=64, temperature=0,
                                        messages=[{{"role": "user", "content": "What is a language model?"}}])
print(answer.choices[0].message.content)'''


def serve(host: str = HOST, port: int = 8000, model: str = "smollm2-135m-instruct", max_batch: int = 8) -> None:
    """Load ``model`` and serve it on http://127.0.0.1:PORT/v1 until interrupted (Ctrl-C)."""
    import uvicorn

    import tinylm

    from .batching import Engine

    sock = free_socket(host, port)           # refuses anything but loopback
    loaded, tokenizer, log = tinylm.load(model)
    template = log.get("chat_template") if isinstance(log, dict) else None
    engine = Engine(loaded, max_batch=max_batch)
    app = make_app(engine, model, tokenizer, template)
    url = f"http://{HOST}:{sock.getsockname()[1]}/v1"
    print(f"serving {model} at {url} (continuous batching, up to {max_batch} requests at once); Ctrl-C stops it\n"
          f"use it from Python with the openai client:\n\n{CLIENT_SNIPPET.format(url=url, model=model)}\n", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


# ----------------------------------------------------------------------------- the load test (a study)

CLIENTS = (1, 2, 4, 8, 16)
"""Concurrent clients in the load test."""
REQUESTS_PER_CLIENT = 3
MAX_TOKENS = 32
BATCH_LIMIT = 16
QUESTIONS = [
    "What is a language model?", "Name three colours of the rainbow.", "Why is the sky blue?",
    "Give me a word that rhymes with cat.", "What is the capital of France?", "How many legs does a spider have?",
    "Write a short greeting for a friend.", "What does a compiler do?", "Why do we sleep?",
    "What is two plus three?", "Describe a cat in one sentence.", "What is the boiling point of water?",
    "Suggest a name for a small dog.", "What is photosynthesis?", "Why is exercise healthy?",
    "What is the largest planet?",
]
"""The chat questions of the load test: client c's request r asks question (c + r) mod 16."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between the sorted values (NumPy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_test(url: str, model: str, clients: int, requests_per_client: int, max_tokens: int) -> dict:
    """``clients`` threads, each sending ``requests_per_client`` streamed greedy chat requests one
    after another; per request: latency, time to first token, tokens.  Wall-clock seconds."""
    from openai import OpenAI

    records, errors = [], []

    def client(c: int):
        api = OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
        for r in range(requests_per_client):
            question = QUESTIONS[(c + r) % len(QUESTIONS)]
            start = time.perf_counter()
            first, n, text = None, 0, []
            try:
                stream = api.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens,
                    temperature=0, stream=True, stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True})
                for part in stream:
                    if part.choices and part.choices[0].delta.content:
                        text.append(part.choices[0].delta.content)
                        if first is None:
                            first = time.perf_counter() - start
                    if part.usage is not None:
                        n = part.usage.completion_tokens
            except Exception as exc:      # recorded, not hidden
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            records.append({"latency": time.perf_counter() - start, "ttft": first, "tokens": n,
                            "key": (c, r), "text": "".join(text)})

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies = [r["latency"] for r in records]
    ttfts = [r["ttft"] for r in records if r["ttft"] is not None]
    tokens = sum(r["tokens"] for r in records)
    return {"clients": clients, "requests": len(records), "errors": errors, "tokens": tokens,
            "wall_seconds": round(wall, 2), "tokens_per_second": round(tokens / wall, 2),
            "latency_p50": round(percentile(latencies, 50), 3), "latency_p95": round(percentile(latencies, 95), 3),
            "ttft_p50": round(percentile(ttfts, 50), 3), "ttft_p95": round(percentile(ttfts, 95), 3),
            "_texts": {r["key"]: r["text"] for r in records}}


def run(out_dir=None, clients: Sequence[int] = CLIENTS, requests_per_client: int = REQUESTS_PER_CLIENT,
        max_tokens: int = MAX_TOKENS, batch_limit: int = BATCH_LIMIT) -> dict:
    """The study ``serving``: SmolLM2 served on loopback on one thread; for each number of
    concurrent clients, the load test against continuous batching (up to ``batch_limit``
    sequences at once) and against one request at a time (batch limit 1)."""
    import os

    import torch

    import tinylm

    from ..usage import studies
    from .batching import Engine

    log = studies.started()
    torch.set_num_threads(1)
    log["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    model_name = "smollm2-135m-instruct"
    model, tokenizer, info = tinylm.load(model_name)
    template = info["chat_template"]
    log["recipe"] = {"model": model_name, "threads": 1, "clients": list(clients),
                     "requests_per_client": requests_per_client, "max_tokens": max_tokens, "greedy": True,
                     "ignore_eos": True, "stream": True, "batch_limits": {"continuous": batch_limit, "one_at_a_time": 1},
                     "questions": QUESTIONS, "host": HOST}
    with ServerThread(make_app(Engine(model, max_batch=batch_limit), model_name, tokenizer, template)) as server:
        load_test(server.url, model_name, 2, 1, 4)      # a warm-up, not recorded: first calls are slower
    modes, texts = {}, {}
    for mode, limit in (("one_at_a_time", 1), ("continuous", batch_limit)):
        rows = []
        for n in clients:
            engine = Engine(model, max_batch=limit)
            app = make_app(engine, model_name, tokenizer, template)
            cpu = time.process_time()
            with ServerThread(app) as server:
                row = load_test(server.url, model_name, n, requests_per_client, max_tokens)
            row["cpu_seconds"] = round(time.process_time() - cpu, 1)
            answers = row.pop("_texts")
            if mode == "one_at_a_time":
                texts[n] = answers
            else:                         # greedy: batching must not change the answers
                row["same_answers_as_one_at_a_time"] = sum(answers[k] == texts[n].get(k) for k in answers)
            row["prefill_cpu_seconds"] = round(engine.prefill_seconds, 2)
            row["decode_cpu_seconds"] = round(engine.decode_seconds, 2)
            row["steps"] = engine.steps
            row["mean_batch"] = round(statistics.fmean(t for t in engine.trace if t) if any(engine.trace) else 0, 2)
            row["gather_share_of_decode"] = round(engine.gather_seconds / max(engine.decode_seconds, 1e-9), 3)
            row["load_average"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(f"{mode:14s} {n:2d} clients: {row['tokens_per_second']:6.1f} tokens/s, p50 {row['latency_p50']:.2f} s, "
                  f"p95 {row['latency_p95']:.2f} s, ttft p50 {row['ttft_p50']:.2f} s, mean batch {row['mean_batch']}, "
                  f"gather {row['gather_share_of_decode']:.1%} of decode, {row['cpu_seconds']} CPU-s", flush=True)
        modes[mode] = rows
    log["runs"] = modes
    log["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    log["note"] = ("wall-clock latency and throughput on loopback, one thread, on a machine shared with other "
                   "work: the load averages say how quiet it was")
    return studies.save("serving", log)
