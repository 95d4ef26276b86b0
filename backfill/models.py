"""The models a backfill runs: resolved and verified on the driver from the same repository the service
serves, then shipped to the inference actors as bytes, so a cluster's workers need no copy of the
repository (only the driver reads it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import onnxruntime as ort

from catalog.manifest import Manifest, ManifestError, load_manifest, resolve_version
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from service.onnx_predictor import check_session, session_options


@dataclass(frozen=True)
class ModelBundle:
    """One category's model at one version: its manifest (as JSON, to travel cheaply) and ONNX bytes."""

    slug: str
    version: int
    folder: str
    manifest_json: str
    onnx: bytes

    @cached_property
    def manifest(self) -> Manifest:
        return Manifest.model_validate_json(self.manifest_json)

    @property
    def spec(self) -> PreprocessSpec:
        return self.manifest.preprocess_spec()

    def open_session(self, threads: int, providers: list[str]) -> ort.InferenceSession:
        """A session with the service's options, checked against the manifest as the service checks it."""
        session = ort.InferenceSession(self.onnx, session_options(threads), providers=providers)
        check_session(Path(self.folder), self.manifest, session)
        return session


def parse_pins(pins: Iterable[str]) -> dict[str, int]:
    """``SLUG=VERSION`` arguments; the slug may be a category's display name too."""
    taxonomy = load_taxonomy()
    pinned: dict[str, int] = {}
    for pin in pins:
        name, _, version = pin.partition("=")
        if not version.isdigit():
            raise ManifestError(f"pin {pin!r} is not SLUG=VERSION (e.g. sarees=2)")
        pinned[taxonomy.category(name).slug] = int(version)
    return pinned


def load_models(repository: Path, slugs: Iterable[str], pins: Mapping[str, int]) -> dict[str, ModelBundle]:
    """Each slug's model at its pinned version (else the newest), verified like the service's: schema,
    taxonomy and sha256. Published versions are never overwritten (export renames a finished folder into
    place), so the bytes read after the check are the bytes checked."""
    bundles: dict[str, ModelBundle] = {}
    for slug in sorted(set(slugs)):
        folder = resolve_version(repository, slug, pins.get(slug))
        manifest = load_manifest(folder)
        if manifest.slug != slug:
            raise ManifestError(f"{folder}: manifest is for {manifest.slug!r}, not {slug!r}")
        data = (folder / manifest.model_file).read_bytes()
        bundles[slug] = ModelBundle(slug, manifest.version, str(folder), manifest.to_json(), data)
    return bundles
