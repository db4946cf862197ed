"""Idle timeouts through the real app, on a clock the test moves: what a person does keeps the session alive, a
page polling on its own (`X-Gateway-Background`) does not, and the session ends exactly when the timeout says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import keys

from .conftest import Client
from .test_sessions import Clock

IDLE_S = 240.0  # four minutes: short enough that the store writes back each touch (idle_s / 4 = 60 s)
LIST = "/api/namespaces/alice/notebooks"
BACKGROUND = {"X-Gateway-Background": "1"}  # what the pages' own polling sends (gateway.js)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gateway(
    gateway_factory: Callable[..., Any], routes_file: Callable[[dict[tuple[str, str], str]], Path], clock: Clock
) -> Client:
    def set_clock(app: web.Application) -> None:
        now: Callable[[], float] = clock
        app[keys.CLOCK] = now

    client: Client = await gateway_factory(
        routes_file=routes_file({}), session_idle_timeout_s=IDLE_S, configure=set_clock
    )
    return client


async def status(gateway: Client, headers: dict[str, str] | None = None) -> int:
    async with gateway.get(LIST, headers=headers or {}) as resp:
        return resp.status


async def test_a_person_at_work_keeps_the_session_and_polling_alone_lets_it_end(gateway: Client, clock: Clock) -> None:
    clock.now += 200
    assert await status(gateway) == 200  # a click: the idle timer starts again here
    clock.now += 200  # 400 s since sign-in: alive only because of that click
    assert await status(gateway) == 200
    for _ in range(4):  # then nobody: the page polls every 50 s on its own
        clock.now += 50
        assert await status(gateway, BACKGROUND) == 200
    clock.now += IDLE_S - 200 - 1  # one second before the timeout, counted from the last click
    assert await status(gateway, BACKGROUND) == 200
    clock.now += 1
    assert await status(gateway, BACKGROUND) == 401
    assert await status(gateway) == 401  # ended for good: a click now does not bring it back


async def test_without_a_click_the_session_ends_at_the_timeout(gateway: Client, clock: Clock) -> None:
    clock.now += IDLE_S - 1
    assert await status(gateway, BACKGROUND) == 200
    clock.now += 1
    assert await status(gateway) == 401
