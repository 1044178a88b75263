"""A plain OpenAI-compatible server: the standard library's threaded HTTP server, one thread per connection.

The deployment-shaped benchmark (:mod:`bench.serve_bench`) uses it instead of the aiohttp fake because it is
what someone benchmarking the service from outside would write: no keep-alive by default (HTTP/1.0, one
TCP connection per request, as ``BaseHTTPRequestHandler`` answers), JSON parsed with the ``json`` module,
a ``time.sleep`` per request for the latency. One tool call for a fresh conversation, a final text once a
tool has answered: two requests per mission. Run standalone::

    python -m bench.plain_llm --port 0 --latency-ms 100 [--keep-alive]

It prints ``FAKE_LLM_URL=http://127.0.0.1:<port>`` once it listens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}


def _body(message: dict[str, Any], finish_reason: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-plain",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "plain-fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": USAGE,
        }
    ).encode()


def _answer(request: Any, tool_name: str) -> bytes:
    messages = request.get("messages") if isinstance(request, dict) else None
    last_role = None
    for message in reversed(messages if isinstance(messages, list) else []):
        role = message.get("role") if isinstance(message, dict) else None
        if role != "system":
            last_role = role
            break
    if last_role == "tool":
        return _body({"role": "assistant", "content": "Plan fertig."}, "stop")
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": tool_name, "arguments": json.dumps({})},
    }
    return _body({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")


def make_handler(latency_s: float, tool_name: str, keep_alive: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def do_POST(self) -> None:  # noqa: N802  (the standard library's naming)
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"null")
            if latency_s > 0:
                time.sleep(latency_s)
            body = _answer(request, tool_name)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    """Up to 2 × 64 connections arrive at once at the default concurrency."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plain_llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--tool-name", default="start_timer")
    parser.add_argument("--keep-alive", action="store_true", help="answer HTTP/1.1 with keep-alive")
    args = parser.parse_args(argv)
    handler = make_handler(args.latency_ms / 1000.0, args.tool_name, args.keep_alive)
    server = _Server(("127.0.0.1", args.port), handler)
    print("FAKE_LLM_URL=http://127.0.0.1:" + str(server.server_address[1]), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
