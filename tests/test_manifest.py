import json

import pytest

from catalog.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    load_manifest,
    resolve_version,
    sha256_file,
)
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy


def manifest_data(model_file, slug="men_tshirts", **changes):
    category = load_taxonomy()[slug]
    data = {
        "category": category.name,
        "slug": category.slug,
        "version": 1,
        "attributes": [{"name": a.name, "column": a.column, "values": list(a.values), "output": a.name}
                       for a in category.attributes],
        "input": {"name": "pixel_values", "shape": ["batch", 3, 32, 32], "dtype": "float32"},
        "preprocessing": PreprocessSpec(height=32, width=32).to_dict(),
        "calibration": {"neck": {"temperature": 1.5, "offsets": [0.0, 0.1]}},
        "rules": [{"if": ["pattern", "solid"], "then": ["print_or_pattern_type", "solid"], "confidence": 0.99,
                   "support": 3033}],
        "opset": 18,
        "sha256": sha256_file(model_file),
        "created_at": "2026-11-28T00:00:00Z",
    }
    data.update(changes)
    return data


@pytest.fixture
def version_dir(tmp_path):
    folder = tmp_path / "repo" / "men_tshirts" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"not really onnx, but hashed")
    return folder


def write(folder, data):
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def test_valid_manifest_round_trips_and_builds_decoder(version_dir):
    write(version_dir, manifest_data(version_dir / "model.onnx"))
    manifest = load_manifest(version_dir)
    assert manifest.output_names[0] == "color"
    assert manifest.preprocess_spec() == PreprocessSpec(height=32, width=32)
    decoder = manifest.decoder()
    assert decoder.calibration["neck"].temperature == 1.5 and len(decoder.rules) == 1
    manifest.write(version_dir)
    assert load_manifest(version_dir) == manifest


def test_checksum_mismatch_is_a_clear_error(version_dir):
    write(version_dir, manifest_data(version_dir / "model.onnx"))
    (version_dir / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="does not match the manifest's"):
        load_manifest(version_dir)


def test_missing_model_file_is_named(version_dir):
    write(version_dir, manifest_data(version_dir / "model.onnx"))
    (version_dir / "model.onnx").unlink()
    with pytest.raises(ManifestError, match=r"model\.onnx: model file named by .* is missing"):
        load_manifest(version_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"category": "Jeans"}, "unknown category 'Jeans'"),
        ({"precision": "int4"}, "precision"),
        ({"format_version": 9}, "format_version 9 is not supported"),
        ({"rules": [{"if": ["pattern", "plaid"], "then": ["neck", "polo"]}]}, "'plaid' is not an allowed value"),
        ({"calibration": {"border": {"temperature": 1.0}}}, "calibration for unknown attribute 'border'"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_manifests_name_the_problem(version_dir, change, message):
    write(version_dir, manifest_data(version_dir / "model.onnx", **change))
    with pytest.raises(ManifestError, match=message):
        load_manifest(version_dir)


def test_attribute_values_must_match_taxonomy(version_dir):
    data = manifest_data(version_dir / "model.onnx")
    data["attributes"][4]["values"] = ["short sleeves", "sleeveless"]
    write(version_dir, data)
    with pytest.raises(ManifestError, match="'sleeve_length' has values"):
        load_manifest(version_dir)


def test_head_order_may_differ_from_taxonomy_order(version_dir):
    data = manifest_data(version_dir / "model.onnx")
    data["attributes"][1]["values"] = ["round", "polo"]
    write(version_dir, data)
    decoder = load_manifest(version_dir).decoder()
    assert decoder.category.attribute("neck").values == ("round", "polo")


def test_not_json_is_reported(version_dir):
    (version_dir / MANIFEST_NAME).write_text("{")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(version_dir)


def test_resolve_version_picks_newest_or_pinned(tmp_path):
    for version in (1, 2, 10):
        (tmp_path / "sarees" / str(version)).mkdir(parents=True)
    assert resolve_version(tmp_path, "sarees").name == "10"
    assert resolve_version(tmp_path, "sarees", 2).name == "2"
    with pytest.raises(ManifestError, match=r"version 3 not found; available versions: \[1, 2, 10\]"):
        resolve_version(tmp_path, "sarees", 3)
    with pytest.raises(ManifestError, match="no numbered versions"):
        resolve_version(tmp_path, "kurtis")


def test_schema_is_exported_for_documentation():
    assert "properties" in Manifest.model_json_schema()


def member(name: str, size: int) -> dict:
    return {"name": name, "backbone": f"{name}-test", "family": "hf-convnext", "image_size": [size, size],
            "checkpoint": f"runs/{name}/men_tshirts", "sha256": "0" * 64}


def test_a_manifest_without_members_stays_valid_and_is_written_without_the_key(version_dir):
    write(version_dir, manifest_data(version_dir / "model.onnx"))
    manifest = load_manifest(version_dir)
    assert manifest.members is None
    assert "members" not in manifest.to_json()


def test_an_ensemble_lists_its_members_and_takes_the_largest_members_input(version_dir):
    model_file = version_dir / "model.onnx"
    manifest = Manifest.model_validate(manifest_data(model_file, members=[member("a", 16), member("b", 32)]))
    assert manifest.members is not None and [m.name for m in manifest.members] == ["a", "b"]
    assert json.loads(manifest.to_json())["members"][1]["image_size"] == [32, 32]
    with pytest.raises(ValueError, match=r"not the largest member's \(b: \[64, 64\]\)"):
        Manifest.model_validate(manifest_data(model_file, members=[member("a", 16), member("b", 64)]))
    with pytest.raises(ValueError, match="at least 2 members"):
        Manifest.model_validate(manifest_data(model_file, members=[member("a", 32)]))
