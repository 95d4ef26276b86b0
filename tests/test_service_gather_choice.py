"""``service/gather_choice.py``: a model gathers uploads into batches only when a batch is measured to be
clearly cheaper per image (a fake model charges a fake clock per call)."""

from __future__ import annotations

import numpy as np

from service.gather_choice import GATHER, ROUNDS, SLOW_S, measured_gather


class Model:
    """Charges the clock ``fixed_s`` per call plus ``per_image_s`` per image, and records batch sizes."""

    def __init__(self, fixed_s: float, per_image_s: float, first_call_s: float = 0.0) -> None:
        self.fixed_s, self.per_image_s, self.first_call_s = fixed_s, per_image_s, first_call_s
        self.now = 0.0
        self.sizes: list[int] = []

    def clock(self) -> float:
        return self.now

    def run(self, batch: np.ndarray) -> None:
        self.sizes.append(len(batch))
        self.now += self.fixed_s + self.per_image_s * len(batch) + (self.first_call_s if len(self.sizes) == 1 else 0)


def test_a_model_whose_calls_are_mostly_fixed_cost_gathers():
    model = Model(fixed_s=0.002, per_image_s=0.001)  # one image 3 ms; 4 at once 1.5 ms each
    size, why = measured_gather(model.run, (3, 8, 8), max_batch_size=16, clock=model.clock)
    assert size == GATHER and "one image 3.00 ms, 4 at once 1.50 ms each" in why
    assert set(model.sizes) == {1, GATHER}


def test_a_model_whose_batches_cost_as_much_per_image_runs_uploads_one_by_one():
    model = Model(fixed_s=0.0, per_image_s=0.010)
    assert measured_gather(model.run, (3, 8, 8), max_batch_size=16, clock=model.clock)[0] == 1


def test_a_slow_model_is_not_probed_beyond_two_calls():
    model = Model(fixed_s=0.0, per_image_s=2 * SLOW_S)
    size, why = measured_gather(model.run, (3, 8, 8), max_batch_size=16, clock=model.clock)
    assert size == 1 and "not probed" in why and model.sizes == [1, 1]


def test_a_slow_first_call_of_a_cold_session_does_not_decide_alone():
    # With WARMUP=false no call ran before the probe: its first allocates, and is not the model's time.
    model = Model(fixed_s=0.002, per_image_s=0.001, first_call_s=10 * SLOW_S)
    assert measured_gather(model.run, (3, 8, 8), max_batch_size=16, clock=model.clock)[0] == GATHER


def test_batches_capped_below_two_never_gather_and_the_batch_cap_bounds_the_size():
    model = Model(fixed_s=0.002, per_image_s=0.001)
    assert measured_gather(model.run, (3, 8, 8), max_batch_size=1, clock=model.clock)[0] == 1 and not model.sizes
    assert measured_gather(model.run, (3, 8, 8), max_batch_size=3, clock=model.clock)[0] == 3


def test_rounds_go_on_within_the_start_up_budget_between_the_least_and_the_most():
    least, most = ROUNDS
    quick = Model(fixed_s=0.002, per_image_s=0.001)
    measured_gather(quick.run, (3, 8, 8), max_batch_size=16, clock=quick.clock)
    assert quick.sizes.count(GATHER) == most + 1  # +1: the first call at that size, not judged
    slow = Model(fixed_s=0.0, per_image_s=0.04)  # a round costs 0.2 s: the budget allows the least only
    measured_gather(slow.run, (3, 8, 8), max_batch_size=16, clock=slow.clock)
    assert slow.sizes.count(GATHER) == least + 1
