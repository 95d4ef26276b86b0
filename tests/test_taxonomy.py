import pytest

from catalog.taxonomy import (
    ATTRIBUTE_COLUMNS,
    Taxonomy,
    UnknownAttributeError,
    UnknownCategoryError,
    UnknownValueError,
    load_taxonomy,
    slugify,
)

SLUGS = ("men_tshirts", "sarees", "kurtis", "women_tshirts", "women_tops_tunics")


def test_five_categories_with_expected_slugs_and_lengths():
    taxonomy = load_taxonomy()
    assert taxonomy.slugs == SLUGS
    assert {c.name: len(c) for c in taxonomy.values()} == {
        "Men Tshirts": 5, "Sarees": 10, "Kurtis": 9, "Women Tshirts": 8, "Women Tops & Tunics": 10,
    }


def test_lookup_by_name_or_slug_gives_same_category():
    taxonomy = load_taxonomy()
    assert taxonomy.category("women_tops_tunics") is taxonomy.category("Women Tops & Tunics")
    assert taxonomy["kurtis"].name == "Kurtis"


def test_official_spelling_ocassion_is_kept():
    attribute = load_taxonomy().category("Women Tops & Tunics").attribute("attr_5")
    assert attribute.name == "ocassion"


def test_attributes_are_ordered_attr_1_to_len():
    for category in load_taxonomy().values():
        assert [a.column for a in category.attributes] == list(ATTRIBUTE_COLUMNS[: len(category)])
        assert [a.position for a in category.attributes] == list(range(1, len(category) + 1))


def test_values_are_unique_and_most_frequent_first():
    for category in load_taxonomy().values():
        for attribute in category.attributes:
            assert len(set(attribute.values)) == len(attribute.values) >= 2
            assert list(attribute.train_counts) == sorted(attribute.train_counts, reverse=True)


def test_unknown_category_error_names_it_and_lists_valid_ones():
    with pytest.raises(UnknownCategoryError) as info:
        load_taxonomy().category("Jeans")
    message = str(info.value)
    assert "'Jeans'" in message and "'Sarees'" in message and "'women_tshirts'" in message


def test_unknown_attribute_error_lists_attributes():
    with pytest.raises(UnknownAttributeError) as info:
        load_taxonomy()["men_tshirts"].attribute("border")
    assert "'border'" in str(info.value) and "'sleeve_length'" in str(info.value)


def test_unknown_value_error_lists_allowed_values():
    attribute = load_taxonomy()["men_tshirts"].attribute("sleeve_length")
    assert attribute.index("long sleeves") == 1
    with pytest.raises(UnknownValueError) as info:
        attribute.index("three-quarter sleeves")
    assert "'three-quarter sleeves'" in str(info.value) and "'short sleeves'" in str(info.value)


def test_round_trip_through_dict():
    taxonomy = load_taxonomy()
    again = Taxonomy.from_dict(taxonomy.to_dict())
    assert again.to_dict() == taxonomy.to_dict()


def test_slugify():
    assert slugify("Women Tops & Tunics") == "women_tops_tunics"


def test_with_value_orders_reorders_only_what_it_is_given():
    men = load_taxonomy()["men_tshirts"]
    reordered = men.with_value_orders({"neck": ("round", "polo")})
    assert reordered.attribute("neck").values == ("round", "polo")
    assert reordered.attribute("color").values == men.attribute("color").values
    assert men.attribute("neck").values == ("polo", "round")
