"""``service/lifecycle.py``: accepting, draining and the drain deadline."""

from __future__ import annotations

import pytest

from service.errors import ShuttingDownError
from service.lifecycle import Lifecycle


def test_the_drain_refuses_new_work_and_tells_its_listeners_once():
    calls: list[int] = []
    lifecycle = Lifecycle(drain_budget_s=30.0, started=True)
    lifecycle.on_drain.append(lambda: calls.append(1))
    assert lifecycle.accepting and lifecycle.drain_left_s() == 30.0
    lifecycle.check_accepting()
    lifecycle.begin_drain()
    deadline = lifecycle.drain_deadline
    lifecycle.begin_drain()  # a second signal keeps the first deadline
    assert calls == [1] and lifecycle.drain_deadline == deadline and not lifecycle.accepting
    assert 29.0 < lifecycle.drain_left_s() <= 30.0
    with pytest.raises(ShuttingDownError):
        lifecycle.check_accepting()
