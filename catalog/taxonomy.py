"""The Meesho Visual Taxonomy: five categories, their ordered attributes and allowed values.

Loaded from ``catalog/data/taxonomy.json`` (built from the challenge's schema and label table), so
training, export and the service all speak exactly the same vocabulary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache

from catalog.package_data import package_data

MAX_ATTRIBUTES = 10
"""The challenge's CSVs always have ``attr_1..attr_10``; a category uses the first ``len`` of them."""

ATTRIBUTE_COLUMNS: tuple[str, ...] = tuple(f"attr_{i}" for i in range(1, MAX_ATTRIBUTES + 1))


class TaxonomyError(ValueError):
    """A category, attribute or value that the taxonomy does not know."""


class UnknownCategoryError(TaxonomyError):
    pass


class UnknownAttributeError(TaxonomyError):
    pass


class UnknownValueError(TaxonomyError):
    pass


def slugify(name: str) -> str:
    """``"Women Tops & Tunics"`` -> ``"women_tops_tunics"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _listing(items: Iterator[str] | tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(i) for i in items)


@dataclass(frozen=True)
class Attribute:
    """One attribute of a category: its CSV column, its name and its allowed values.

    ``values`` are ordered most frequent first in the challenge's train set; that order is also the
    order of the model head's logits.
    """

    column: str
    name: str
    values: tuple[str, ...]
    train_counts: tuple[int, ...]
    train_missing: int

    @property
    def position(self) -> int:
        """1-based slot of the attribute (``attr_3`` -> 3)."""
        return int(self.column.split("_")[1])

    def index(self, value: str) -> int:
        """Position of ``value`` in :attr:`values`; raises :class:`UnknownValueError` naming it."""
        try:
            return self.values.index(value)
        except ValueError:
            raise UnknownValueError(
                f"{value!r} is not an allowed value of attribute {self.name!r}; "
                f"allowed: {_listing(self.values)}"
            ) from None

    def validate(self, value: str) -> str:
        self.index(value)
        return value


@dataclass(frozen=True)
class Category:
    name: str
    slug: str
    attributes: tuple[Attribute, ...]
    train_rows: int

    def __len__(self) -> int:
        return len(self.attributes)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    def with_value_orders(self, value_orders: Mapping[str, Sequence[str]]) -> Category:
        """This category with each attribute's values in a model head's order (which may differ from the
        taxonomy's); attributes missing from ``value_orders`` keep theirs."""
        attributes = tuple(
            replace(a, values=tuple(value_orders[a.name])) if a.name in value_orders else a for a in self.attributes
        )
        return replace(self, attributes=attributes)

    def attribute(self, name: str) -> Attribute:
        """Look an attribute up by name (``"sleeve_length"``) or column (``"attr_5"``)."""
        for attr in self.attributes:
            if name in (attr.name, attr.column):
                return attr
        raise UnknownAttributeError(
            f"{self.name!r} has no attribute {name!r}; its attributes: {_listing(self.attribute_names)}"
        )


class Taxonomy(Mapping[str, Category]):
    """Categories keyed by display name; :meth:`category` also accepts slugs."""

    def __init__(self, categories: list[Category]) -> None:
        self._by_name = {c.name: c for c in categories}
        self._by_slug = {c.slug: c for c in categories}

    def __getitem__(self, key: str) -> Category:
        return self.category(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def slugs(self) -> tuple[str, ...]:
        return tuple(self._by_slug)

    def category(self, name_or_slug: str) -> Category:
        found = self._by_name.get(name_or_slug) or self._by_slug.get(name_or_slug)
        if found is None:
            raise UnknownCategoryError(
                f"unknown category {name_or_slug!r}; valid categories: {_listing(self.names)} "
                f"(or their slugs {_listing(self.slugs)})"
            )
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Taxonomy:
        categories = []
        for name, spec in data.items():
            if not isinstance(spec, Mapping):
                raise TaxonomyError(f"category {name!r}: expected an object, got {type(spec).__name__}")
            attributes = tuple(
                Attribute(
                    column=a["col"],
                    name=a["name"],
                    values=tuple(a["values"]),
                    train_counts=tuple(a.get("counts", [0] * len(a["values"]))),
                    train_missing=int(a.get("n_nan", 0)),
                )
                for a in spec["attributes"]
            )
            if len(attributes) != spec["len"]:
                raise TaxonomyError(f"category {name!r}: len {spec['len']} but {len(attributes)} attributes")
            categories.append(
                Category(name=name, slug=slugify(name), attributes=attributes,
                         train_rows=int(spec.get("n_train", 0)))
            )
        return cls(categories)

    def to_dict(self) -> dict[str, object]:
        return {
            c.name: {
                "len": len(c),
                "n_train": c.train_rows,
                "attributes": [
                    {"col": a.column, "name": a.name, "values": list(a.values),
                     "counts": list(a.train_counts), "n_nan": a.train_missing}
                    for a in c.attributes
                ],
            }
            for c in self._by_name.values()
        }


@cache
def load_taxonomy() -> Taxonomy:
    """The challenge's taxonomy, shipped with the package."""
    text = package_data("taxonomy.json").read_text(encoding="utf-8")
    return Taxonomy.from_dict(json.loads(text))
