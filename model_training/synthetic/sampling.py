"""Label rows for the synthetic catalog, sampled from the challenge's real label table.

Whole real rows are drawn per category, so class imbalance, co-occurrence and the pattern of missing
labels carry over unchanged. A missing label only means nobody labelled it: the product still has the
attribute, so the renderer needs a value. It is drawn from the real rows of the same category that have
the attribute labelled and agree with this row on a related attribute (e.g. sleeve styling given sleeve
length), falling back to the attribute's marginal distribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from catalog.dataset import LabelRow
from catalog.real_labels import load_real_labels
from catalog.taxonomy import Category, load_taxonomy

# Attributes whose values go together in the real table; tried in order when filling a missing label.
RELATED: dict[str, tuple[str, ...]] = {
    "sleeve_length": ("sleeve_styling",),
    "sleeve_styling": ("sleeve_length",),
    "pattern": ("print_or_pattern_type", "pallu_details"),
    "print_or_pattern_type": ("pattern",),
    "border": ("border_width", "pallu_details"),
    "border_width": ("border",),
    "pallu_details": ("pattern", "border"),
    "blouse_pattern": ("pattern", "border"),
    "ornamentation": ("pattern",),
    "occasion": ("pattern", "border"),
    "ocassion": ("pattern",),
    "transparency": ("occasion", "pattern"),
    "color": ("pattern",),
    "neck": ("pattern",),
    "neck_collar": ("sleeve_styling",),
    "fit_shape": ("length",),
    "length": ("fit_shape",),
    "surface_styling": ("pattern",),
}
MIN_CONDITIONAL = 5
"""Fewer real rows than this agreeing on the related value: use the marginal instead."""


@dataclass(frozen=True)
class SampledRow:
    """A real label row (``observed``, with its missing labels) and the complete labels to render."""

    category: str
    observed: dict[str, str | None]
    full: dict[str, str]


@dataclass(frozen=True)
class _Distributions:
    values: dict[str, tuple[str, ...]]
    marginal: dict[str, np.ndarray]
    # (attribute, related attribute, related value) -> probabilities over the attribute's values
    conditional: dict[tuple[str, str, str], np.ndarray]


@cache
def _real_rows(category: str) -> tuple[LabelRow, ...]:
    return tuple(r for r in load_real_labels() if r.category == category)


@cache
def _distributions(category: str) -> _Distributions:
    cat = load_taxonomy().category(category)
    rows = _real_rows(cat.name)
    values = {a.name: a.values for a in cat.attributes}
    marginal: dict[str, np.ndarray] = {}
    conditional: dict[tuple[str, str, str], np.ndarray] = {}
    for attr in cat.attributes:
        index = {v: i for i, v in enumerate(attr.values)}
        counts = np.zeros(len(attr.values))
        for r in rows:
            v = r.labels.get(attr.name)
            if v is not None:
                counts[index[v]] += 1
        marginal[attr.name] = (counts + 1e-9) / (counts + 1e-9).sum()
        for related in RELATED.get(attr.name, ()):
            if related not in values:
                continue
            table: dict[str, np.ndarray] = {}
            for r in rows:
                v, w = r.labels.get(attr.name), r.labels.get(related)
                if v is not None and w is not None:
                    table.setdefault(w, np.zeros(len(attr.values)))[index[v]] += 1
            for w, c in table.items():
                if c.sum() >= MIN_CONDITIONAL:
                    conditional[(attr.name, related, w)] = c / c.sum()
    return _Distributions(values, marginal, conditional)


def fill_missing(category: str, labels: Mapping[str, str | None], rng: np.random.Generator) -> dict[str, str]:
    """Complete labels: keep those present, draw the missing ones (conditionally where possible)."""
    cat: Category = load_taxonomy().category(category)
    dist = _distributions(cat.name)
    full: dict[str, str] = {k: v for k, v in labels.items() if v is not None}
    # Fill in taxonomy order, so an attribute filled earlier can condition a later one.
    for attr in cat.attributes:
        if attr.name in full:
            continue
        probs = dist.marginal[attr.name]
        for related in RELATED.get(attr.name, ()):
            w = full.get(related)
            if w is not None and (attr.name, related, w) in dist.conditional:
                probs = dist.conditional[(attr.name, related, w)]
                break
        full[attr.name] = attr.values[int(rng.choice(len(attr.values), p=probs))]
    return {a.name: full[a.name] for a in cat.attributes}  # taxonomy order, as in the CSVs


def sample_rows(category: str, n: int, rng: np.random.Generator) -> list[SampledRow]:
    """``n`` real rows of ``category`` (without replacement while the table has enough), completed."""
    cat = load_taxonomy().category(category)
    real = _real_rows(cat.name)
    picks = rng.choice(len(real), size=n, replace=n > len(real))
    out = []
    for i in picks:
        observed = dict(real[int(i)].labels)
        out.append(SampledRow(cat.name, observed, fill_missing(cat.name, observed, rng)))
    return out


def sample_all(per_category: int, seed: int, categories: Sequence[str] | None = None) -> list[SampledRow]:
    """``per_category`` rows for each category, each category from its own seeded stream."""
    taxonomy = load_taxonomy()
    names = list(categories) if categories is not None else list(taxonomy.names)
    rows: list[SampledRow] = []
    for name in names:
        index = taxonomy.names.index(taxonomy.category(name).name)
        rows.extend(sample_rows(name, per_category, np.random.default_rng([seed, 7919, index])))
    return rows
