"""A local stand-in for an OpenAI-compatible endpoint: a real HTTP server on 127.0.0.1 with scripted replies.

The architecture forbids mocking the LLM client in tests, so the real ``openai`` client talks HTTP to this
server instead. It speaks just enough of the Chat Completions API (``POST /v1/chat/completions`` and
``GET /v1/models``) for the client to parse its answers, replays a script of replies in order, and records
every request it received (path, headers, decoded JSON body) so tests can check what was sent: a repair
turn, the tools declared, where the API key went.

Script entries (consumed one per chat request):

- :class:`Reply` (``tool_reply(...)``, ``text_reply(...)``): a ``chat.completion`` with one choice;
- :class:`Sleep`: wait N seconds before answering (a client timeout shorter than N sees a timeout);
- :class:`HTTPError`: an HTTP error status with an OpenAI-style error body (e.g. 500);
- :class:`Raw`: any body and status, sent as given (malformed responses);
- a callable ``(RecordedRequest) -> entry``: a reply computed from the request (echoes, chat sessions).

When the script runs out the server answers HTTP 500 "script exhausted", so a test that sends one request
more than it planned fails loudly instead of hanging.

Use it as a context manager (``with FakeOpenAI([...]) as server: ... server.base_url``) or through the
``fake_openai`` fixture (import it into the test module), which starts an empty-script server; add replies
with :meth:`FakeOpenAI.add`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

import pytest


@dataclass(frozen=True)
class ToolCall:
    """One function call in an assistant message; ``arguments`` is the raw JSON string the model wrote."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """An assistant message: content, tool calls, or a refusal; ``finish_reason`` defaults from the shape."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` before answering with ``then`` (default: an empty text reply).

    The wait ends early when the server closes, so a test never waits out a long sleep at teardown.
    """

    seconds: float
    then: "Reply | HTTPError | Raw | None" = None


@dataclass(frozen=True)
class HTTPError:
    """An HTTP error status with the OpenAI error body ``{"error": {"message", "type", "code"}}``."""

    status: int = 500
    message: str = "internal server error (scripted)"


@dataclass(frozen=True)
class Raw:
    """A response sent exactly as given: ``body`` (a dict is JSON-encoded, a str sent as is) and status."""

    body: dict[str, Any] | str
    status: int = 200
    content_type: str = "application/json"


Entry = Union[Reply, Sleep, HTTPError, Raw, Callable[["RecordedRequest"], Any]]
"""One scripted answer; a callable receives the request and returns one of the other kinds."""


@dataclass(frozen=True)
class RecordedRequest:
    """What the server received: method, path, headers (names lower-cased), raw body and its JSON."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: str
    body: Any = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of a chat-completions request (empty for other requests)."""
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


def tool_reply(name: str, arguments: dict[str, Any] | str, *, call_id: str | None = None,
               content: str | None = None) -> Reply:
    """A reply calling tool ``name``; a dict of arguments is JSON-encoded, a str is sent verbatim
    (so a test can send malformed JSON)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Reply(content=content, tool_calls=(ToolCall(name=name, arguments=args, id=call_id),))


def text_reply(text: str, *, finish_reason: str = "stop") -> Reply:
    """A plain assistant message (prose or JSON content)."""
    return Reply(content=text, finish_reason=finish_reason)


def _usage(request_text: str, reply_text: str) -> dict[str, int]:
    # A rough token count (4 characters a token): clients only need the fields to exist.
    prompt, completion = len(request_text) // 4, len(reply_text) // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class FakeOpenAI:
    """A threaded HTTP server on 127.0.0.1 (random port) answering chat completions from a script.

    Attributes:
        requests: every request received, in order (chat and non-chat).
        base_url: ``http://127.0.0.1:<port>/v1``, what an OpenAI client takes as ``base_url``.
        models: model ids listed by ``GET /v1/models``.
    """

    def __init__(self, script: Iterable[Entry] = (), *, models: Iterable[str] = ("fake-model",)) -> None:
        self._script: deque[Entry] = deque(script)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._counter = 0
        self.requests: list[RecordedRequest] = []
        self.models: list[str] = list(models)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # Handler threads are daemons: a handler stuck in a Sleep never blocks server_close().
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()

    # -- script -------------------------------------------------------------------------------------------

    def add(self, *entries: Entry) -> "FakeOpenAI":
        """Append replies to the script (returns self, so calls chain)."""
        with self._lock:
            self._script.extend(entries)
        return self

    @property
    def remaining(self) -> int:
        """Script entries not yet consumed."""
        with self._lock:
            return len(self._script)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completions requests received, in order."""
        return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving; sleeping handlers wake up and give up."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAI":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving ------------------------------------------------------------------------------------------

    def _next(self, request: RecordedRequest) -> Any:
        with self._lock:
            entry: Any = self._script.popleft() if self._script else HTTPError(500, "fake server: script exhausted")
        if callable(entry) and not isinstance(entry, (Reply, Sleep, HTTPError, Raw)):
            entry = entry(request)
        return entry

    def _completion(self, reply: Reply, request: RecordedRequest) -> dict[str, Any]:
        with self._lock:
            self._counter += 1
            n = self._counter
        message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": call.id or f"call_{n}_{i}", "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments}}
                for i, call in enumerate(reply.tool_calls)
            ]
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        model = request.body.get("model", "fake-model") if isinstance(request.body, dict) else "fake-model"
        reply_text = json.dumps(message)
        return {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(request.raw_body, reply_text),
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so no handler thread lingers on a kept-alive socket.
            protocol_version = "HTTP/1.0"

            def _record(self) -> RecordedRequest:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = None
                rec = RecordedRequest(method=self.command, path=self.path,
                                      headers={k.lower(): v for k, v in self.headers.items()},
                                      raw_body=raw, body=body)
                with fake._lock:
                    fake.requests.append(rec)
                return rec

            def _send(self, status: int, body: dict[str, Any] | str, content_type: str = "application/json") -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nobody is left to answer

            def _answer(self, entry: Any, request: RecordedRequest) -> None:
                if isinstance(entry, Sleep):
                    if fake._closing.wait(entry.seconds):
                        return  # the server is closing: drop the connection
                    entry = entry.then if entry.then is not None else Reply(content="")
                if isinstance(entry, HTTPError):
                    kind = "server_error" if entry.status >= 500 else "invalid_request_error"
                    self._send(entry.status, {"error": {"message": entry.message, "type": kind, "code": None}})
                elif isinstance(entry, Raw):
                    self._send(entry.status, entry.body, entry.content_type)
                elif isinstance(entry, Reply):
                    self._send(200, fake._completion(entry, request))
                else:
                    self._send(500, {"error": {"message": f"fake server: bad script entry {entry!r}",
                                               "type": "server_error", "code": None}})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                request = self._record()
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error",
                                               "code": None}})
                    return
                if not isinstance(request.body, dict):
                    self._send(400, {"error": {"message": "the body is not a JSON object",
                                               "type": "invalid_request_error", "code": None}})
                    return
                if request.body.get("stream"):
                    self._send(400, {"error": {"message": "the fake server does not stream",
                                               "type": "invalid_request_error", "code": None}})
                    return
                self._answer(fake._next(request), request)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._record()
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in fake.models]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error",
                                               "code": None}})

            def log_message(self, *args: object) -> None:
                pass  # keep test output clean

        return Handler


@pytest.fixture()
def fake_openai() -> Iterator[FakeOpenAI]:
    """An empty-script fake endpoint, closed after the test; add replies with ``fake_openai.add(...)``."""
    with FakeOpenAI() as server:
        yield server


__all__ = ["FakeOpenAI", "HTTPError", "Raw", "RecordedRequest", "Reply", "Sleep", "ToolCall", "fake_openai",
           "text_reply", "tool_reply"]
