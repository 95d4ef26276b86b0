"""Turning a model's logits into catalog values: calibration, consistency rules, joint decoding.

Training fits the calibration and mines the rules; the exported manifest carries them; the service and
the offline ``predict`` CLI decode with exactly this code.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from catalog.taxonomy import Category


@dataclass(frozen=True)
class AttributeCalibration:
    """``softmax((logits + offsets) / temperature)``; offsets shift class priors toward macro-F1."""

    temperature: float = 1.0
    offsets: tuple[float, ...] = ()

    def apply(self, logits: np.ndarray) -> np.ndarray:
        shifted = logits.astype(np.float64)
        if self.offsets:
            if len(self.offsets) != logits.shape[-1]:
                raise ValueError(f"{len(self.offsets)} offsets for {logits.shape[-1]} logits")
            shifted = shifted + np.asarray(self.offsets)
        return shifted / self.temperature

    def to_dict(self) -> dict[str, object]:
        return {"temperature": self.temperature, "offsets": list(self.offsets)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributeCalibration:
        temperature = float(data.get("temperature", 1.0))
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return cls(temperature, tuple(float(v) for v in data.get("offsets") or ()))


@dataclass(frozen=True)
class ConsistencyRule:
    """``if_attribute == if_value`` implies ``then_attribute == then_value`` (mined from labels)."""

    if_attribute: str
    if_value: str
    then_attribute: str
    then_value: str
    confidence: float = 1.0
    support: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"if": [self.if_attribute, self.if_value], "then": [self.then_attribute, self.then_value],
                "confidence": self.confidence, "support": self.support}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsistencyRule:
        if_part, then_part = data["if"], data["then"]
        return cls(str(if_part[0]), str(if_part[1]), str(then_part[0]), str(then_part[1]),
                   float(data.get("confidence", 1.0)), int(data.get("support", 0)))

    def __str__(self) -> str:
        return f"{self.if_attribute}={self.if_value!r} => {self.then_attribute}={self.then_value!r}"


def validate_rules(rules: Sequence[ConsistencyRule], category: Category) -> None:
    """Every rule must name attributes and values of ``category``; raises naming the bad one."""
    for rule in rules:
        category.attribute(rule.if_attribute).validate(rule.if_value)
        category.attribute(rule.then_attribute).validate(rule.then_value)
        if rule.if_attribute == rule.then_attribute:
            raise ValueError(f"rule {rule} relates an attribute to itself")


@dataclass(frozen=True)
class Decoder:
    """Calibrated probabilities and rule-respecting joint decoding for one category."""

    category: Category
    calibration: Mapping[str, AttributeCalibration] = field(default_factory=dict)
    rules: tuple[ConsistencyRule, ...] = ()
    candidates_per_attribute: int = 3

    def __post_init__(self) -> None:
        validate_rules(self.rules, self.category)
        for name in self.calibration:
            self.category.attribute(name)

    def probabilities(self, logits: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per attribute, (N, K) logits -> (N, K) calibrated probabilities."""
        out: dict[str, np.ndarray] = {}
        for attribute in self.category.attributes:
            raw = np.asarray(logits[attribute.name])
            if raw.shape[-1] != len(attribute.values):
                raise ValueError(
                    f"{attribute.name}: {raw.shape[-1]} logits for {len(attribute.values)} values"
                )
            calibration = self.calibration.get(attribute.name, AttributeCalibration())
            scaled = calibration.apply(raw)
            scaled -= scaled.max(axis=-1, keepdims=True)
            exp = np.exp(scaled)
            out[attribute.name] = exp / exp.sum(axis=-1, keepdims=True)
        return out

    def decode(self, probabilities: Mapping[str, np.ndarray]) -> list[dict[str, int]]:
        """Per row, the value index of every attribute: the most probable combination breaking no rule.

        Rules only tie a few attributes together, so each connected group of ruled attributes is
        searched over its top candidates; free attributes take their argmax. When no candidate
        combination satisfies the rules (a rare, contradictory image) the plain argmax stands. The
        rules are checked on the whole batch at once, so only the rows whose argmax breaks one pay for
        the search (this runs once per served batch).
        """
        names = [a.name for a in self.category.attributes]
        argmax = {name: np.asarray(probabilities[name]).argmax(axis=-1) for name in names}
        columns = [argmax[name].tolist() for name in names]
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        for group, indexed in self._rule_groups():
            broken = np.zeros(len(rows), dtype=bool)
            for if_name, if_index, then_name, then_index in indexed:
                broken |= (argmax[if_name] == if_index) & (argmax[then_name] != then_index)
            for i in np.flatnonzero(broken).tolist():
                self._decode_group(i, rows[i], group, indexed, probabilities)
        return rows

    def _rule_groups(self) -> list[tuple[list[str], list[tuple[str, int, str, int]]]]:
        """Each group of attributes tied by rules, with its rules as value indices."""
        cached: list[tuple[list[str], list[tuple[str, int, str, int]]]] | None = self.__dict__.get("_rule_groups_")
        if cached is None:
            cached = []
            for group in self._groups():
                indexed = [(r.if_attribute, self.category.attribute(r.if_attribute).values.index(r.if_value),
                            r.then_attribute, self.category.attribute(r.then_attribute).values.index(r.then_value))
                           for r in self.rules if r.if_attribute in group]
                cached.append((group, indexed))
            self.__dict__["_rule_groups_"] = cached  # frozen dataclass: the cache sits beside the fields
        return cached

    def _groups(self) -> list[list[str]]:
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for rule in self.rules:
            parent[find(rule.if_attribute)] = find(rule.then_attribute)
        groups: dict[str, list[str]] = {}
        for name in self.category.attribute_names:
            if name in parent:
                groups.setdefault(find(name), []).append(name)
        return list(groups.values())

    def _decode_group(self, i: int, row: dict[str, int], group: list[str],
                      indexed: list[tuple[str, int, str, int]], probabilities: Mapping[str, np.ndarray]) -> None:
        """Row ``i``'s best combination of the group's top candidates that breaks none of its rules
        (given as value indices); the first of equals in candidate order wins."""
        position = {name: j for j, name in enumerate(group)}
        log_p = [np.log(np.asarray(probabilities[name][i]) + 1e-12) for name in group]
        top = [np.argsort(-values)[: self.candidates_per_attribute] for values in log_p]
        combos = np.array(list(itertools.product(*top)))  # (candidates, len(group)), in product order
        allowed = np.ones(len(combos), dtype=bool)
        for if_name, if_index, then_name, then_index in indexed:
            allowed &= ~((combos[:, position[if_name]] == if_index) & (combos[:, position[then_name]] != then_index))
        if not allowed.any():
            return
        totals = log_p[0][combos[:, 0]]
        for j in range(1, len(group)):
            totals = totals + log_p[j][combos[:, j]]
        best = combos[int(np.argmax(np.where(allowed, totals, -np.inf)))]
        row.update(zip(group, best.tolist(), strict=True))


@dataclass(frozen=True)
class AttributePrediction:
    """One attribute's decoded value, its calibrated confidence and the top-k alternatives. Whether to
    abstain on it is the caller's decision (the service's threshold), made in one place there."""

    value: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]


Row = dict[str, AttributePrediction]
"""One image's predictions, by attribute name."""


def predict_rows(decoder: Decoder, logits: Mapping[str, np.ndarray], top_k: int = 3) -> list[Row]:
    """Logits of a batch -> per row, per attribute, the decoded value with its confidence and top-k."""
    probabilities = decoder.probabilities(logits)
    decoded = decoder.decode(probabilities)
    # Whole-batch numpy, then plain lists: per-element numpy calls would cost more than the model here.
    columns = []
    for attribute in decoder.category.attributes:
        p = probabilities[attribute.name]
        columns.append((attribute, p.tolist(), np.argsort(-p, axis=-1)[:, :top_k].tolist()))
    rows: list[Row] = []
    for i, chosen in enumerate(decoded):
        row: Row = {}
        for attribute, confidences, orders in columns:
            p_row = confidences[i]
            index = chosen[attribute.name]
            row[attribute.name] = AttributePrediction(
                value=attribute.values[index], confidence=p_row[index],
                top_k=tuple((attribute.values[k], p_row[k]) for k in orders[i]),
            )
        rows.append(row)
    return rows
