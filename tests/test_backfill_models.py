"""``backfill/models.py``: models resolved and verified as the service resolves them, and shipped as bytes."""

from __future__ import annotations

import pytest

from backfill.models import load_models, parse_pins
from benchmarks.onnx_factory import build_repository, write_version
from catalog.manifest import ManifestError
from catalog.taxonomy import TaxonomyError


def test_newest_version_unless_pinned_and_the_bytes_are_the_checked_file(tmp_path):
    build_repository(tmp_path, slugs=("kurtis", "sarees"), versions=(1, 2))
    bundles = load_models(tmp_path, ["sarees", "kurtis", "sarees"], {"kurtis": 1})
    assert {slug: b.version for slug, b in bundles.items()} == {"kurtis": 1, "sarees": 2}
    assert bundles["sarees"].onnx == (tmp_path / "sarees" / "2" / "model.onnx").read_bytes()
    assert bundles["kurtis"].spec.input_shape == (3, 32, 32)
    session = bundles["sarees"].open_session(1, ["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == bundles["sarees"].manifest.output_names


def test_missing_models_and_tampered_files_are_refused(tmp_path):
    folder = write_version(tmp_path, "kurtis")
    with pytest.raises(ManifestError, match="no numbered versions"):
        load_models(tmp_path, ["sarees"], {})
    with pytest.raises(ManifestError, match="version 4 not found"):
        load_models(tmp_path, ["kurtis"], {"kurtis": 4})
    with (folder / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ManifestError, match="sha256"):
        load_models(tmp_path, ["kurtis"], {})


def test_pins_name_a_category_and_a_version():
    assert parse_pins(["sarees=2", "Women Tops & Tunics=7"]) == {"sarees": 2, "women_tops_tunics": 7}
    with pytest.raises(ManifestError, match="SLUG=VERSION"):
        parse_pins(["sarees"])
    with pytest.raises(TaxonomyError, match="unknown category 'hats'"):
        parse_pins(["hats=1"])
