from collections import Counter

from catalog.real_labels import load_real_labels


def test_real_table_has_every_row_and_the_documented_missing_rate():
    rows = load_real_labels()
    assert len(rows) == 70_213
    counts = Counter(r.category for r in rows)
    assert counts["Women Tshirts"] == 18_774
    women = [r for r in rows if r.category == "Women Tshirts"]
    complete = sum(all(v is not None for v in r.labels.values()) for r in women)
    assert complete == 258
