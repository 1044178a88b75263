"""Adaptive concurrency and the fake LLM's provider-style limit (pure, no I/O)."""

from __future__ import annotations

import asyncio

from mana_ai.runner.limits import AdaptiveLimit, estimate_tokens
from mana_ai.testing.fake_llm import RateLimit


async def test_adaptive_limit_halves_on_429_and_probes_back_up() -> None:
    limit = AdaptiveLimit(8)
    limit.rate_limited()
    assert limit.limit == 4
    limit.rate_limited()
    limit.rate_limited()
    limit.rate_limited()
    assert limit.limit == 1  # never below one
    for _ in range(1):
        limit.succeeded()
    assert limit.limit == 2
    for _ in range(2):
        limit.succeeded()
    assert limit.limit == 3
    for _ in range(100):
        limit.succeeded()
    assert limit.limit == 8  # never above the ceiling


async def test_adaptive_limit_bounds_requests_in_flight() -> None:
    limit = AdaptiveLimit(4)
    limit.rate_limited()  # 2 at once
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with limit:
            peak = max(peak, limit.in_use)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(request() for _ in range(10)))
    assert peak == 2 and limit.in_use == 0


def test_fake_rate_limit_allows_one_second_of_burst_then_the_rate() -> None:
    bucket = RateLimit(600)  # 10 a second
    assert [bucket.take(0.0) for _ in range(10)] == [None] * 10
    assert bucket.take(0.0) == 1  # 11th at once: 429, Retry-After 1 s
    assert bucket.take(0.1) is None  # one more after 100 ms
    assert bucket.take(0.15) == 1


def test_token_estimate_grows_with_the_prompt() -> None:
    small = estimate_tokens([{"role": "user", "content": "hi"}], b"[]")
    large = estimate_tokens([{"role": "user", "content": "x" * 4000}], b"[]")
    assert large - small >= 990
