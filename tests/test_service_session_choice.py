"""``service/session_choice.py``: a batch spins only when it is all its model has to do, and only while
spinning is measured to be the faster there (sessions are names here; a fake host's clock charges each
call its cost)."""

from __future__ import annotations

from service.session_choice import EXPLORE_EVERY, PROBE_EVERY, RECENT, Sessions


class Host:
    """Calls a session by name and charges the fake clock its cost on this host."""

    def __init__(self, **cost_s: float) -> None:
        self.cost_s = cost_s
        self.now = 0.0
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def call(self, session: str) -> str:
        self.calls.append(session)
        self.now += self.cost_s[session]
        return session


def lone_calls(sessions: Sessions[str], host: Host, count: int) -> list[str]:
    start = len(host.calls)
    for _ in range(count):
        sessions.run(1, 1, host.call)
    return host.calls[start:]


def test_a_model_without_a_spinning_session_always_sleeps():
    host = Host(sleeping=0.046)
    assert lone_calls(Sessions("sleeping", clock=host.clock), host, 3) == ["sleeping"] * 3


def test_a_batch_beside_other_admitted_images_sleeps_and_does_not_count():
    host = Host(sleeping=0.046, spinning=0.038)
    sessions = Sessions("sleeping", "spinning", clock=host.clock)
    assert sessions.run(1, 2, host.call) == "sleeping"  # another upload is being preprocessed
    assert sessions.run(4, 9, host.call) == "sleeping"
    assert lone_calls(sessions, host, 2) == ["spinning", "sleeping"]  # still measuring each once


def test_a_call_with_no_request_behind_it_neither_counts_nor_judges_a_session():
    host = Host(sleeping=0.046, spinning=0.038)
    sessions = Sessions("sleeping", "spinning", clock=host.clock)
    host.cost_s["spinning"] = 0.5  # a warm-up while the host is busy starting
    assert sessions.run(1, 0, host.call) == "spinning"
    host.cost_s["spinning"] = 0.038
    assert lone_calls(sessions, host, 3) == ["spinning", "sleeping", "spinning"]  # judged on requests only
    assert sessions.prefers_lone()


def test_lone_calls_spin_while_spinning_is_faster_and_probe_the_other_session():
    host = Host(sleeping=0.046, spinning=0.038)
    sessions = Sessions("sleeping", "spinning", clock=host.clock)
    calls = lone_calls(sessions, host, 3 * PROBE_EVERY)
    assert calls[:2] == ["spinning", "sleeping"]  # each measured once
    assert sessions.prefers_lone()
    probes = [number for number, session in enumerate(calls, 1) if session == "sleeping"][1:]
    explored = [EXPLORE_EVERY * k for k in range(1, RECENT)]  # until it has RECENT calls behind it
    assert probes == [*explored, PROBE_EVERY, 2 * PROBE_EVERY, 3 * PROBE_EVERY]  # then one in PROBE_EVERY
    assert sessions.run(4, 4, host.call) == "spinning"  # a whole batch that is all there is to do spins too


def test_the_choice_follows_the_host_when_spinning_turns_slower():
    host = Host(sleeping=0.046, spinning=0.038)
    sessions = Sessions("sleeping", "spinning", clock=host.clock)
    lone_calls(sessions, host, PROBE_EVERY)
    host.cost_s["spinning"] = 0.080  # a neighbour now holds a core: spinning doubles the call
    calls = lone_calls(sessions, host, 3 * PROBE_EVERY)
    assert not sessions.prefers_lone()
    assert calls[-PROBE_EVERY:].count("spinning") == 1  # only the probe


def test_only_one_image_calls_are_compared():
    host = Host(sleeping=0.046, spinning=0.038)
    sessions = Sessions("sleeping", "spinning", clock=host.clock)
    host.cost_s["spinning"] = 1.0  # a batch of 8 takes longer, which says nothing about one image
    sessions.run(8, 8, host.call)
    host.cost_s["spinning"] = 0.038
    assert lone_calls(sessions, host, 2) == ["spinning", "sleeping"]  # spinning still unmeasured


def test_a_few_calls_slowed_by_interference_do_not_lose_the_faster_session():
    host = Host(sleeping=0.026, spinning=0.019)
    sessions = Sessions("sleeping", "spinning", clock=host.clock)
    lone_calls(sessions, host, 2 * PROBE_EVERY + 1)
    host.cost_s["spinning"] = 0.060  # the tail of a load: the load generator still holds a core
    lone_calls(sessions, host, 2)
    host.cost_s["spinning"] = 0.019
    assert sessions.prefers_lone()
    assert lone_calls(sessions, host, 3) == ["spinning"] * 3


def test_one_fast_probe_wins_back_a_session_whose_host_recovered():
    host = Host(sleeping=0.026, spinning=0.060)  # a neighbour holds a core for a while
    sessions = Sessions("sleeping", "spinning", clock=host.clock)
    lone_calls(sessions, host, PROBE_EVERY)
    assert not sessions.prefers_lone()
    host.cost_s["spinning"] = 0.019  # the neighbour is gone
    calls = lone_calls(sessions, host, PROBE_EVERY + 3)
    assert calls[-3:] == ["spinning"] * 3  # from the next probe on


def test_a_first_call_slowed_by_a_starting_load_is_corrected_within_a_few_calls():
    # A server's first lone call comes as a load starts, beside uploads still being read: the lone
    # session's one measurement is slow, and the quiet spell after the load must not pay for it long.
    host = Host(sleeping=0.036, spinning=0.080)
    sessions = Sessions("sleeping", "spinning", clock=host.clock)
    assert lone_calls(sessions, host, 2) == ["spinning", "sleeping"]
    assert not sessions.prefers_lone()
    host.cost_s["spinning"] = 0.026  # the load is over
    calls = lone_calls(sessions, host, 2 * EXPLORE_EVERY)
    assert calls.index("spinning") < EXPLORE_EVERY  # probed within a few calls, not PROBE_EVERY
    assert calls[-EXPLORE_EVERY:].count("spinning") >= EXPLORE_EVERY - 1  # and kept
