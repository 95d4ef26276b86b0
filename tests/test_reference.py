"""``catalog/reference.py``: the recorded outputs a runtime must reproduce at load."""

from __future__ import annotations

import json

import numpy as np

from catalog.preprocessing import PreprocessSpec
from catalog.reference import TOLERANCES, compare_reference, record, recorded, reference_batch

SPEC = PreprocessSpec(height=24, width=40)


def test_reference_batch_is_a_fixed_function_of_the_spec_spanning_the_pixel_range():
    batch = reference_batch(SPEC, 3)
    assert batch.shape == (3, 3, 24, 40) and batch.dtype == np.float32
    assert np.array_equal(batch, reference_batch(SPEC, 3))
    assert -2.01 < batch.min() < -1.5 and 1.5 < batch.max() < 2.01
    assert not np.allclose(batch[0], batch[1])  # the images differ


def test_recorded_outputs_survive_the_manifest_json():
    outputs = {"color": np.array([[1.5, -0.25], [0.125, 3.0]], np.float32), "ood_score": np.array([4.0, 9.5])}
    entry = json.loads(json.dumps(record(outputs)))
    assert entry["images"] == 2
    back = recorded({"reference": entry})
    assert back is not None and all(np.array_equal(back[k], outputs[k]) for k in outputs)
    assert recorded({"fp32": {}}) is None


def logits(*rows: list[float]) -> dict[str, np.ndarray]:
    return {"color": np.array(rows, np.float32)}


def test_outputs_within_the_tolerance_pass_and_beyond_it_are_named_with_their_numbers():
    expected = logits([4.0, 1.0, -2.0], [0.0, 2.0, 1.0])
    assert compare_reference(expected, logits([4.002, 1.0, -2.0], [0.0, 2.0, 1.003]), TOLERANCES["fp32"]) == []
    problems = compare_reference(expected, logits([4.1, 1.0, -2.0], [0.0, 2.0, 1.0]), TOLERANCES["fp32"])
    assert problems == ["color: max |diff| 0.1 > 0.004"]


def test_reduced_precision_has_a_wider_bound_on_the_logits_scale():
    expected = logits([4.0, 3.9, 0.0])
    assert compare_reference(expected, logits([3.85, 3.99, 0.1]), TOLERANCES["bf16"]) == []  # bound 0.2
    assert compare_reference(expected, logits([3.85, 3.99, 0.1]), TOLERANCES["fp16"]) == [
        "color: max |diff| 0.15 > 0.04"]


def test_the_ood_score_is_compared_on_the_thresholds_scale():
    expected = {"ood_score": np.array([50.0, 200.0, 99.99], np.float32)}
    ood = ("ood_score", 100.0)
    close = {"ood_score": np.array([50.05, 199.95, 100.01], np.float32)}
    assert compare_reference(expected, close, TOLERANCES["fp32"], ood) == []  # a flag at the threshold may flip
    far = {"ood_score": np.array([51.0, 200.0, 99.99], np.float32)}
    assert compare_reference(expected, far, TOLERANCES["fp32"], ood) == [
        "ood_score: max |diff| 0.01 of the threshold > 0.001"]


def test_a_missing_or_misshapen_output_is_a_problem():
    expected = {**logits([1.0, 2.0]), "ood_score": np.array([1.0], np.float32)}
    problems = compare_reference(expected, logits([1.0, 2.0, 3.0]), TOLERANCES["fp32"])
    assert problems == ["color: shape (1, 3), recorded (1, 2)", "ood_score: shape None, recorded (1,)"]
