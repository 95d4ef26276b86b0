"""The competition metric and the per-attribute report.

For each (category, attribute): micro-F1 and macro-F1 over the rows whose true label is present, and
their harmonic mean; the category's score is the mean over its attributes; the final score is the plain
mean over categories.

Edge cases, decided once here:
- An attribute with no labelled rows has no score: it is reported (``n == 0``) and left out of its
  category's mean. A category with no scored attribute is left out of the final mean.
- A predicted value outside the taxonomy is kept as written, so it is simply wrong (and, as in
  scikit-learn's ``f1_score`` on the raw strings, it enters macro-F1 as a label of its own).
- A truth row with no prediction row is wrong for every attribute (scored as the value ``""``) and
  counted in ``missing_predictions``. An abstention (empty cell) is scored the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from catalog.dataset import LabelRow
from catalog.taxonomy import Taxonomy, load_taxonomy

NO_PREDICTION = ""


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


@dataclass(frozen=True)
class AttributeScore:
    name: str
    n: int
    accuracy: float
    weighted_f1: float
    micro_f1: float
    macro_f1: float
    hm: float
    invalid_predictions: int = 0


@dataclass(frozen=True)
class CategoryScore:
    name: str
    attributes: dict[str, AttributeScore]
    missing_predictions: int = 0

    @property
    def scored(self) -> list[AttributeScore]:
        return [a for a in self.attributes.values() if a.n > 0]

    @property
    def unscored(self) -> list[str]:
        return [a.name for a in self.attributes.values() if a.n == 0]

    @property
    def score(self) -> float | None:
        scored = self.scored
        return float(np.mean([a.hm for a in scored])) if scored else None


@dataclass(frozen=True)
class Report:
    categories: dict[str, CategoryScore] = field(default_factory=dict)

    @property
    def score(self) -> float:
        scores = [c.score for c in self.categories.values() if c.score is not None]
        return float(np.mean(scores)) if scores else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "score": self.score,
            "categories": {
                name: {
                    "score": cat.score,
                    "missing_predictions": cat.missing_predictions,
                    "unscored_attributes": cat.unscored,
                    "attributes": {
                        a.name: {"micro_f1": a.micro_f1, "macro_f1": a.macro_f1, "hm": a.hm, "n": a.n,
                                 "accuracy": a.accuracy, "weighted_f1": a.weighted_f1,
                                 "invalid_predictions": a.invalid_predictions}
                        for a in cat.attributes.values()
                    },
                }
                for name, cat in self.categories.items()
            },
        }

    def format_table(self) -> str:
        lines = [
            f"{'category':<20} {'attribute':<22} {'n':>6} {'acc':>6} {'wF1':>6} {'microF1':>7} "
            f"{'macroF1':>7} {'HM':>6}"
        ]
        for cat in self.categories.values():
            for a in cat.attributes.values():
                if a.n == 0:
                    lines.append(f"{cat.name:<20} {a.name:<22} {0:>6} (no labelled rows: left out of the mean)")
                    continue
                lines.append(
                    f"{cat.name:<20} {a.name:<22} {a.n:>6} {a.accuracy:>6.4f} {a.weighted_f1:>6.4f} "
                    f"{a.micro_f1:>7.4f} {a.macro_f1:>7.4f} {a.hm:>6.4f}"
                )
            score = "n/a" if cat.score is None else f"{cat.score:.4f}"
            note = f"  ({cat.missing_predictions} truth rows had no prediction)" if cat.missing_predictions else ""
            lines.append(f"{cat.name:<20} {'= category score':<22} {score}{note}")
        lines.append(f"final score (mean over categories): {self.score:.6f}")
        return "\n".join(lines)


def attribute_score(name: str, y_true: Sequence[str], y_pred: Sequence[str],
                    allowed: Sequence[str] | None = None) -> AttributeScore:
    """Micro/macro/weighted F1 over labels = union of true and predicted labels (scikit-learn's rule)."""
    n = len(y_true)
    if n == 0:
        return AttributeScore(name, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if len(y_pred) != n:
        raise ValueError(f"{name}: {n} true labels but {len(y_pred)} predictions")
    labels = sorted(set(y_true) | set(y_pred))
    index = {label: i for i, label in enumerate(labels)}
    t = np.fromiter((index[v] for v in y_true), dtype=np.int64, count=n)
    p = np.fromiter((index[v] for v in y_pred), dtype=np.int64, count=n)
    k = len(labels)
    tp = np.bincount(t[t == p], minlength=k).astype(np.float64)
    support = np.bincount(t, minlength=k).astype(np.float64)
    predicted = np.bincount(p, minlength=k).astype(np.float64)
    denominator = support + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    accuracy = float(tp.sum() / n)
    macro = float(f1.mean())
    weighted = float((f1 * support).sum() / support.sum())
    invalid = 0 if allowed is None else sum(1 for v in y_pred if v != NO_PREDICTION and v not in allowed)
    return AttributeScore(name, n, accuracy, weighted, accuracy, macro, harmonic_mean(accuracy, macro), invalid)


def score(truth: Sequence[LabelRow], predictions: Mapping[int, LabelRow],
          taxonomy: Taxonomy | None = None) -> Report:
    """Score predictions (by id) against truth rows."""
    taxonomy = taxonomy or load_taxonomy()
    by_category: dict[str, list[LabelRow]] = {}
    for row in truth:
        by_category.setdefault(taxonomy.category(row.category).name, []).append(row)
    categories: dict[str, CategoryScore] = {}
    for name in taxonomy.names:
        rows = by_category.get(name)
        if not rows:
            continue
        category = taxonomy.category(name)
        missing = 0
        attributes: dict[str, AttributeScore] = {}
        paired: list[tuple[LabelRow, LabelRow | None]] = []
        for row in rows:
            pred = predictions.get(row.id)
            if pred is not None and pred.category != name:
                pred = None
            missing += pred is None
            paired.append((row, pred))
        for attribute in category.attributes:
            y_true: list[str] = []
            y_pred: list[str] = []
            for row, pred in paired:
                truth_value = row.labels.get(attribute.name)
                if truth_value is None:
                    continue
                y_true.append(truth_value)
                value = pred.labels.get(attribute.name) if pred is not None else None
                y_pred.append(value if value is not None else NO_PREDICTION)
            attributes[attribute.name] = attribute_score(attribute.name, y_true, y_pred, attribute.values)
        categories[name] = CategoryScore(name, attributes, missing)
    return Report(categories)
