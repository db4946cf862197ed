"""The retry loops' backoff: exponential and capped, jittered between the floor and the ceiling, and
reset by a success. The random source is injected, so nothing here waits or depends on chance."""

from __future__ import annotations

import random

import pytest

from gateway.backoff import Backoff


def top(low: float, high: float) -> float:
    return high


def bottom(low: float, high: float) -> float:
    return low


def test_the_ceiling_doubles_up_to_the_maximum() -> None:
    backoff = Backoff(0.5, 4.0, uniform=top)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_each_wait_is_drawn_between_the_minimum_and_the_ceiling() -> None:
    asked: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        asked.append((low, high))
        return (low + high) / 2

    backoff = Backoff(1.0, 8.0, uniform=record)
    assert [backoff.next() for _ in range(5)] == [1.0, 1.5, 2.5, 4.5, 4.5]
    assert asked == [(1.0, 1.0), (1.0, 2.0), (1.0, 4.0), (1.0, 8.0), (1.0, 8.0)]


def test_two_replicas_with_different_draws_do_not_retry_in_step() -> None:
    first, second = Backoff(0.1, 30.0, uniform=top), Backoff(0.1, 30.0, uniform=bottom)
    waits = [(first.next(), second.next()) for _ in range(8)]
    assert all(a != b for a, b in waits[1:])  # the first wait is the floor for everyone


def test_a_success_starts_the_next_failures_from_the_minimum() -> None:
    backoff = Backoff(0.1, 30.0, uniform=top)
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert [backoff.next() for _ in range(3)] == pytest.approx([0.1, 0.2, 0.4])


def test_waits_stay_within_bounds_whatever_the_random_source_returns() -> None:
    wild = Backoff(0.5, 2.0, uniform=lambda low, high: random.choice([-1.0, 0.0, 100.0]))
    assert all(0.5 <= wild.next() <= 2.0 for _ in range(50))
    real = Backoff(0.5, 2.0)  # random.uniform
    assert all(0.5 <= real.next() <= 2.0 for _ in range(200))


@pytest.mark.parametrize(("min_s", "max_s", "factor"), [(0.0, 1.0, 2.0), (2.0, 1.0, 2.0), (0.1, 1.0, 0.5)])
def test_a_backoff_that_could_spin_or_shrink_is_refused(min_s: float, max_s: float, factor: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(min_s, max_s, factor=factor)
