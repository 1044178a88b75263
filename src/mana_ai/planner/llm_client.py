"""OpenAI-compatible chat-completions client on aiohttp + orjson (SPEC §18).

Hot-path decisions:

- the request body is assembled from byte pieces; the ``tools`` array arrives pre-serialised
  (``tools_json``) and is spliced in verbatim, so a tool set is encoded once per run, not per request;
- one :class:`aiohttp.ClientSession` per client with a keep-alive connection pool sized for about a
  hundred concurrent requests;
- :func:`build_request_body` and :func:`parse_completion` are pure functions, so the CPU cost of a
  request can be profiled without any network.

Failures are raised as :class:`~mana_ai.errors.ProviderError` with a ``kind`` usable as a metric
label. Connection errors, timeouts, 429 and 5xx are retried with exponential backoff and full
jitter, honouring ``Retry-After``. The API key never appears in an error message or log line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal, Self

import aiohttp
import orjson
from yarl import URL

from mana_ai.errors import ProviderError
from mana_ai.pgtext import ESCAPED_NUL, without_nul
from mana_ai.planner.types import ChatMessage, CompletionResponse, FinishReason, ToolCall, Usage

logger = logging.getLogger(__name__)

AuthHeader = Literal["authorization", "x-api-key"]

DEFAULT_MODEL: Final = "mana/reasoning"
ERROR_TEXT_LIMIT: Final = 500
_KEPT_FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "tool_calls": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}
# mana-llm error kinds that will not change on a retry even when sent with a 5xx status.
_PERMANENT_BODY_KINDS: Final = frozenset({"auth", "blocked", "capability", "bad_request", "truncated"})


@dataclass(slots=True)
class ClientStats:
    """Counters for benchmarks and debugging (the runner owns the Prometheus metrics)."""

    calls: int = 0
    """``complete()`` invocations."""
    requests: int = 0
    """HTTP attempts, retries included."""
    retries: int = 0
    failures: int = 0
    """``complete()`` invocations that raised."""


@dataclass(frozen=True, slots=True)
class _Failure:
    error: ProviderError
    retryable: bool
    retry_after_s: float | None = None


class OpenAICompatClient:
    """:class:`~mana_ai.planner.types.LlmClient` for any OpenAI-compatible endpoint (mana-llm, vLLM ...).

    Usable as ``async with``; otherwise the session is created on first use and must be released
    with :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        auth_header: AuthHeader = "authorization",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        retry_after_cap_s: float = 30.0,
        provider: str | None = None,
        pool_size: int = 128,
        rng: random.Random | None = None,
        max_tokens: int | None = None,
        on_rate_limit: Callable[[float | None], None] | None = None,
    ) -> None:
        """Configure the client; no I/O happens here.

        Args:
            base_url: endpoint root; requests go to ``<base_url>/v1/chat/completions``.
            api_key: sent as ``Authorization: Bearer`` or ``X-API-Key`` (see ``auth_header``); none if unset.
            auth_header: which header carries the key (mana-llm itself checks ``X-API-Key``, W5).
            timeout_s: total time allowed for one HTTP attempt.
            max_retries: retries after the first attempt for retryable failures.
            backoff_base_s: first backoff ceiling; doubles per retry (full jitter below the ceiling).
            backoff_max_s: largest backoff ceiling.
            retry_after_cap_s: a server's ``Retry-After`` is honoured up to this many seconds.
            provider: label for error messages; defaults to the model id's text before ``/``.
            pool_size: connection pool size (total and per host).
            rng: random source for the jitter (tests pass a seeded one).
            max_tokens: sent as ``max_tokens`` with every request (``None``: the server's default).
            on_rate_limit: called with the ``Retry-After`` seconds (or None) for every 429 answer, also
                for those that are retried (the runner's provider-limit pacing listens here).
        """
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        url = URL(base_url.rstrip("/"))
        self._url = url / "v1" / "chat" / "completions"
        # For messages: the URL without any credentials embedded in it.
        self._safe_base = str(url.with_user(None).with_password(None))
        self._api_key = api_key or None
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key is not None:
            if auth_header == "x-api-key":
                self._headers["X-API-Key"] = self._api_key
            else:
                self._headers["Authorization"] = "Bearer " + self._api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_cap_s = retry_after_cap_s
        self._provider = provider
        self._pool_size = pool_size
        self._rng = rng or random.Random()
        self._max_tokens = max_tokens if max_tokens and max_tokens > 0 else None
        self.on_rate_limit = on_rate_limit
        self.retry_rate_limits = True
        """False: a 429 is raised at once (the caller paces and retries it, see mana_ai.runner.limits)."""
        self._session: aiohttp.ClientSession | None = None
        self.stats = ClientStats()

    def __repr__(self) -> str:
        return "OpenAICompatClient(" + repr(self._safe_base) + ")"

    async def open(self) -> None:
        """Create the HTTP session (idempotent)."""
        self._session_or_create()

    async def close(self) -> None:
        """Close the HTTP session and its connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        tools_json: bytes,
        model: str,
        temperature: float = 0.3,
    ) -> CompletionResponse:
        """Run one chat completion, retrying transient failures.

        Args:
            messages: the conversation in OpenAI wire format.
            tools_json: the ``tools`` array as JSON bytes (``b"[]"`` for none), spliced in verbatim.
            model: model id; empty means :data:`DEFAULT_MODEL`.
            temperature: sampling temperature.

        Returns:
            The parsed first choice.

        Raises:
            ProviderError: ``kind`` is ``unreachable``, ``timeout``, ``rate_limit``, ``server_error``,
                ``bad_request``, ``auth``, ``bad_response``, ``unknown`` or the kind from a mana-llm
                error body.
        """
        model = model or DEFAULT_MODEL
        body = build_request_body(
            messages,
            tools_json=tools_json,
            model=model,
            temperature=temperature,
            max_tokens=self._max_tokens,
        )
        # Messages name the LLM and its model, so "unreachable" is never mistaken for mana itself.
        provider = self._provider or "LLM server (model " + model + ")"
        session = self._session_or_create()
        self.stats.calls += 1
        attempt = 0
        while True:
            outcome = await self._attempt(session, body, provider)
            if isinstance(outcome, CompletionResponse):
                return outcome
            if outcome.error.status == 429 and self.on_rate_limit is not None:
                self.on_rate_limit(outcome.retry_after_s)
            if not outcome.retryable or attempt >= self._max_retries:
                self.stats.failures += 1
                raise outcome.error
            delay = backoff_delay(
                attempt,
                base_s=self._backoff_base_s,
                max_s=self._backoff_max_s,
                retry_after_s=outcome.retry_after_s,
                retry_after_cap_s=self._retry_after_cap_s,
                rng=self._rng,
            )
            attempt += 1
            self.stats.retries += 1
            logger.info(
                "LLM request failed, retrying",
                extra={
                    "action": "llm.retry",
                    "provider": provider,
                    "kind": outcome.error.kind,
                    "status": outcome.error.status,
                    "attempt": attempt,
                    "delay_s": round(delay, 3),
                },
            )
            await asyncio.sleep(delay)

    def _session_or_create(self) -> aiohttp.ClientSession:
        # Synchronous on purpose: no await between the check and the assignment, so concurrent
        # first calls cannot create two sessions.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, limit_per_host=self._pool_size, keepalive_timeout=30.0
            )
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self._session

    async def _attempt(
        self, session: aiohttp.ClientSession, body: bytes, provider: str
    ) -> CompletionResponse | _Failure:
        self.stats.requests += 1
        try:
            async with session.post(
                self._url, data=body, headers=self._headers, timeout=self._timeout
            ) as resp:
                status = resp.status
                raw = await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            message = provider + " timed out after " + str(self._timeout_s) + " s at " + self._safe_base
            return _Failure(ProviderError(message, kind="timeout"), retryable=True)
        except aiohttp.ClientError as exc:
            # Connection refused, DNS failure, reset or server disconnect: nothing usable came back.
            message = provider + " unreachable at " + self._safe_base + ": " + self._redact(_describe(exc))
            return _Failure(ProviderError(message, kind="unreachable"), retryable=True)

        if 200 <= status < 300:
            try:
                return parse_completion(raw, provider=provider)
            except ProviderError as exc:
                return _Failure(ProviderError(self._redact(str(exc)), kind=exc.kind, status=status), False)

        message, body_kind = describe_error_body(status, raw, provider=provider)
        kind = body_kind or status_kind(status)
        retryable = (
            (status == 429 and self.retry_rate_limits) or status >= 500
        ) and body_kind not in _PERMANENT_BODY_KINDS
        retry_after_s = (
            parse_retry_after(retry_after, now=datetime.now(UTC)) if retryable or status == 429 else None
        )
        error = ProviderError(self._redact(message), kind=kind, status=status)
        return _Failure(error, retryable, retry_after_s)

    def _redact(self, text: str) -> str:
        # A misbehaving server may echo request headers; the key must not reach logs or messages.
        return text.replace(self._api_key, "***") if self._api_key else text


def build_request_body(
    messages: list[ChatMessage],
    *,
    tools_json: bytes,
    model: str,
    temperature: float,
    max_tokens: int | None = None,
) -> bytes:
    """Serialise a chat-completions request without re-encoding the tools (pure).

    ``tools`` and ``tool_choice`` are omitted when ``tools_json`` is empty or ``b"[]"``;
    ``max_tokens`` when it is ``None``.
    """
    parts = [b'{"model":', orjson.dumps(model), b',"messages":', orjson.dumps(messages)]
    if tools_json and tools_json != b"[]":
        parts += (b',"tools":', tools_json, b',"tool_choice":"auto"')
    if max_tokens is not None:
        parts += (b',"max_tokens":', str(int(max_tokens)).encode())
    parts += (b',"temperature":', orjson.dumps(temperature), b',"stream":false}')
    return b"".join(parts)


def parse_completion(raw: bytes, *, provider: str = "llm") -> CompletionResponse:
    """Parse a chat-completions response body (pure, SPEC §18).

    Raises:
        ProviderError: kind ``bad_response`` when the body is not JSON or has no choices.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(
            provider + " returned a body that is not JSON (not kept)", kind="bad_response"
        ) from exc
    if ESCAPED_NUL in raw:
        # Postgres cannot store NUL, so a plan quoting one could never be written back; it carries no meaning
        # in text, so it goes (in tool arguments too: they are JSON inside a string).
        data = without_nul(data)
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProviderError(provider + " response had no choices", kind="bad_response")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    content = message.get("content")
    finish = choice.get("finish_reason")
    return CompletionResponse(
        content=content if isinstance(content, str) else None,
        tool_calls=_parse_tool_calls(message.get("tool_calls")),
        finish_reason=_KEPT_FINISH_REASONS.get(finish, "stop") if isinstance(finish, str) else "stop",
        usage=_parse_usage(data.get("usage")),
    )


def parse_arguments(raw: str) -> dict[str, Any] | None:
    """Tool-call arguments as a dict; ``None`` for invalid JSON or a non-object; ``{}`` for blank."""
    if not raw.strip():
        return {}  # some providers send "" for a call without parameters
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    return without_nul(value) if "\\u0000" in raw else value


ERROR_BODY_NOT_KEPT: Final = "the provider returned an error; its body is not kept"
"""The fixed text of every provider error: a body may echo the prompt (granted plaintext), so none of it is
ever put into an error message, a log line, the sync log or a table (docs/privacy.md)."""
_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,39}")


def describe_error_body(status: int, raw: bytes, *, provider: str) -> tuple[str, str | None]:
    """Error message for a non-2xx response and the error kind the body names, if any (pure).

    The message is ``"<provider> <status>[ (<kind>)]: <fixed text>"``; of the body only the error kind
    (:func:`_body_kind`) is kept, and only when it looks like a kind (a short lowercase token), never free
    text.
    """
    prefix = provider + " " + str(status)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    kind = _body_kind(data)
    if isinstance(kind, str) and _KIND.fullmatch(kind):
        return prefix + " (" + kind + "): " + ERROR_BODY_NOT_KEPT, kind
    return prefix + ": " + ERROR_BODY_NOT_KEPT, None


def _body_kind(data: object) -> object:
    """mana-llm's ``{"detail": {"kind": …}}`` or the OpenAI ``{"error": {"code": …}}`` (such as
    ``context_length_exceeded``, which tells a prompt too long for the model from any other 400)."""
    if not isinstance(data, dict):
        return None
    detail, error = data.get("detail"), data.get("error")
    if isinstance(detail, dict) and "kind" in detail:
        return detail["kind"]
    return error.get("code") if isinstance(error, dict) else None


KNOWN_KINDS: Final = frozenset(
    {
        # ours (transport, status, body)
        *("timeout", "unreachable", "bad_response", "rate_limit", "server_error", "auth", "bad_request"),
        # mana-llm's {"detail": {"kind"}}
        *("unknown", "blocked", "truncated", "capability", "no_healthy_provider"),
        # OpenAI's {"error": {"code"}}
        *("context_length_exceeded", "model_not_found", "insufficient_quota", "invalid_api_key"),
        *("rate_limit_exceeded", "server_error"),
    }
)
"""Error kinds a metric label may carry; any other kind a server names is counted as ``other``."""


def kind_label(kind: str) -> str:
    """``kind`` as a metric label: a server names kinds freely, but a label's values must stay few."""
    return kind if kind in KNOWN_KINDS else "other"


def status_kind(status: int) -> str:
    """Error kind for an HTTP status without a kind in the body."""
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server_error"
    if status in (401, 403):
        return "auth"
    if status in (400, 422):
        return "bad_request"
    return "unknown"


def provider_label(model: str) -> str:
    """``"openrouter/anthropic/claude"`` -> ``"openrouter"``; a bare model id is its own label."""
    head = model.split("/", 1)[0]
    return head or "llm"


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date); ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None,
    retry_after_cap_s: float,
    rng: random.Random,
) -> float:
    """Full-jitter exponential backoff, but never shorter than the server's (capped) ``Retry-After``."""
    ceiling = min(max_s, base_s * (2 ** min(attempt, 30)))
    delay = rng.uniform(0.0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, retry_after_cap_s))
    return delay


def _parse_tool_calls(raw_calls: object) -> tuple[ToolCall, ...]:
    if not isinstance(raw_calls, list):
        return ()
    calls: list[ToolCall] = []
    taken: set[str] = set()
    for index, item in enumerate(raw_calls):
        if not isinstance(item, dict):
            continue
        function = item.get("function")
        if not isinstance(function, dict):
            function = {}
        name = function.get("name")
        raw_args = function.get("arguments")
        arguments: dict[str, Any] | None
        if isinstance(raw_args, str):
            raw, arguments = raw_args, parse_arguments(raw_args)
        elif raw_args is None:
            raw, arguments = "", {}
        else:
            # Some providers send the arguments as an object instead of a JSON string.
            raw = orjson.dumps(raw_args).decode()
            arguments = raw_args if isinstance(raw_args, dict) else None
        calls.append(
            ToolCall(
                id=_unique_call_id(item.get("id"), index, taken),
                name=name if isinstance(name, str) else "",
                raw_arguments=raw,
                arguments=arguments,
            )
        )
    return tuple(calls)


def _unique_call_id(call_id: object, index: int, taken: set[str]) -> str:
    """The call's own id, or ``call_<index>`` when it has none, made unique within the answer (and taken).

    Each tool result names its call by this id; some local servers send none or the same one twice, and a
    provider refuses a conversation whose results do not match its calls one to one.
    """
    base = call_id if isinstance(call_id, str) and call_id else f"call_{index}"
    unique, n = base, 1
    while unique in taken:
        unique, n = f"{base}_{n}", n + 1
    taken.add(unique)
    return unique


def _parse_usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(_count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens")))


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return int(value)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return type(exc).__name__ + (": " + text if text else "")
