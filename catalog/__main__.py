"""``python -m catalog``: print the taxonomy the project ships."""

from catalog.taxonomy import load_taxonomy

for category in load_taxonomy().values():
    print(f"{category.name} ({category.slug}): {len(category)} attributes")
    for attribute in category.attributes:
        print(f"  {attribute.column:<8} {attribute.name:<22} {', '.join(attribute.values)}")
