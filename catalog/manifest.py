"""The model repository's ``manifest.json``: everything the service needs to serve one ONNX model.

Layout (in the spirit of Triton's model repository)::

    MODELS_DIR/<category_slug>/<version>/model.onnx
    MODELS_DIR/<category_slug>/<version>/manifest.json

Export writes manifests with :meth:`Manifest.write`; the service reads them with
:func:`load_manifest`, which validates against the same schema and the taxonomy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from catalog.decoding import AttributeCalibration, ConsistencyRule, Decoder, validate_rules
from catalog.preprocessing import Interpolation, PreprocessSpec, ResizeMode
from catalog.taxonomy import Category, Taxonomy, TaxonomyError, load_taxonomy

MANIFEST_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
TORCH_EXPORT_NAME = "model.pt2"
Precision = Literal["fp32", "fp16", "int8"]
OodMethod = Literal["composite", "mahalanobis", "knn", "energy"]
OOD_METHODS: tuple[str, ...] = ("composite", "mahalanobis", "knn", "energy")
OOD_OUTPUT = "ood_score"
"""The ONNX output holding each image's out-of-distribution score (higher: less like the training images)."""


class ManifestError(ValueError):
    """A manifest or model file that cannot be served, with the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributeSpec(_Strict):
    name: str
    column: str
    values: list[str] = Field(min_length=2)
    output: str = Field(description="name of the ONNX output holding this attribute's logits")


class TensorSpec(_Strict):
    name: str
    shape: list[int | str]
    dtype: Literal["float32"] = Field(description="fp16 models keep a float32 input (the cast is in the graph)")


class PreprocessingModel(_Strict):
    height: int
    width: int
    resize: ResizeMode
    interpolation: Interpolation
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.model_dump())


class CalibrationModel(_Strict):
    temperature: float = Field(default=1.0, gt=0)
    offsets: list[float] = Field(default_factory=list)


class RuleModel(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    if_: list[str] = Field(alias="if", min_length=2, max_length=2)
    then: list[str] = Field(min_length=2, max_length=2)
    confidence: float = 1.0
    support: int = 0


class MemberSpec(_Strict):
    """One checkpoint of an ensemble exported as a single model (``Manifest.members``)."""

    name: str
    backbone: str = Field(description="what --backbone said when it was trained")
    family: str
    image_size: list[int] = Field(min_length=2, max_length=2, description="its own input [height, width]")
    checkpoint: str = Field(description="its checkpoint directory at export")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of its model.safetensors")


class OodSpec(_Strict):
    """The model's out-of-distribution detector: its score is one more graph output; an image whose score
    exceeds ``threshold`` is unlike the training images (``model_training/ood.py``)."""

    output: str = OOD_OUTPUT
    method: OodMethod
    parameters: dict[str, Any] = Field(default_factory=dict)
    threshold: float
    false_alarm_rate: float = Field(gt=0, lt=1, description="share of held-out in-distribution images flagged")
    calibration_images: int = Field(ge=1, description="held-out in-distribution images the threshold was set on")
    train_images: int | None = Field(default=None, description="training images the statistics were fitted on")


class TorchExportSpec(_Strict):
    """A ``torch.export`` program of the same model beside the ONNX file (``export --torch-export``), for the
    service's PyTorch backend: ``forward(pixel_values)`` returns the manifest's outputs in its order (the
    attributes', then the OOD score)."""

    file: str = TORCH_EXPORT_NAME
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    torch_version: str = Field(description="the torch that wrote it; torch.export programs load in the same "
                               "or a newer torch")


class Manifest(_Strict):
    format_version: int = MANIFEST_FORMAT_VERSION
    category: str
    slug: str
    version: int = Field(ge=1)
    attributes: list[AttributeSpec]
    input: TensorSpec
    preprocessing: PreprocessingModel
    calibration: dict[str, CalibrationModel] = Field(default_factory=dict)
    rules: list[RuleModel] = Field(default_factory=list)
    precision: Precision = "fp32"
    opset: int
    model_file: str = MODEL_NAME
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: dict[str, Any] = Field(default_factory=dict, description="checkpoint path, validation metrics, commit")
    verification: dict[str, Any] = Field(default_factory=dict, description="parity numbers measured at export")
    created_at: str
    library_versions: dict[str, str] = Field(default_factory=dict)
    members: list[MemberSpec] | None = Field(
        default=None, description="an ensemble's checkpoints (absent for one checkpoint); the input and "
        "preprocessing are the largest member's, the graph resizes and renormalises for the others")
    ood: OodSpec | None = Field(default=None, description="the out-of-distribution detector (absent: none; "
                                "the service then reports out_of_distribution null)")
    torch_export: TorchExportSpec | None = Field(default=None, description="a torch.export program of the "
                                                 "model (absent: none was written)")

    @field_validator("format_version")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value != MANIFEST_FORMAT_VERSION:
            raise ValueError(f"manifest format_version {value} is not supported (expected {MANIFEST_FORMAT_VERSION})")
        return value

    @model_validator(mode="after")
    def _matches_taxonomy(self) -> Manifest:
        try:
            category = load_taxonomy().category(self.category)
        except TaxonomyError as error:
            raise ValueError(str(error)) from None
        check_against_taxonomy(self, category)
        check_members(self)
        if self.ood is not None and self.ood.output in [*self.output_names, self.input.name]:
            raise ValueError(f"ood output {self.ood.output!r} repeats an attribute output or the input name")
        return self

    @property
    def name(self) -> str:
        return self.slug

    @property
    def output_names(self) -> list[str]:
        return [a.output for a in self.attributes]

    def taxonomy_category(self, taxonomy: Taxonomy | None = None) -> Category:
        return (taxonomy or load_taxonomy()).category(self.category)

    def preprocess_spec(self) -> PreprocessSpec:
        return self.preprocessing.spec()

    def decoder(self) -> Decoder:
        category = self.taxonomy_category()
        calibration = {
            name: AttributeCalibration(c.temperature, tuple(c.offsets)) for name, c in self.calibration.items()
        }
        rules = tuple(ConsistencyRule.from_dict(r.model_dump(by_alias=True)) for r in self.rules)
        return Decoder(_head_ordered(category, self), calibration, rules)

    def to_json(self) -> str:
        # No "members" key for a single checkpoint, no "ood" key without a detector: such manifests read
        # exactly as before ensembles and detectors existed.
        absent = {name for name in ("members", "ood", "torch_export") if getattr(self, name) is None}
        return self.model_dump_json(indent=2, by_alias=True, exclude=absent or None)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path


def _head_ordered(category: Category, manifest: Manifest) -> Category:
    return category.with_value_orders({a.name: a.values for a in manifest.attributes})


def check_against_taxonomy(manifest: Manifest, category: Category) -> None:
    if manifest.slug != category.slug:
        raise ValueError(
            f"slug {manifest.slug!r} does not match category {category.name!r} (expected {category.slug!r})"
        )
    names = [a.name for a in manifest.attributes]
    if names != list(category.attribute_names):
        raise ValueError(
            f"attributes {names} do not match the taxonomy's {list(category.attribute_names)} for {category.name!r}"
        )
    for spec, attribute in zip(manifest.attributes, category.attributes, strict=True):
        if spec.column != attribute.column:
            raise ValueError(f"attribute {spec.name!r} has column {spec.column!r}, taxonomy says {attribute.column!r}")
        if sorted(spec.values) != sorted(attribute.values) or len(set(spec.values)) != len(spec.values):
            raise ValueError(
                f"attribute {spec.name!r} has values {spec.values}; "
                f"the taxonomy allows exactly {list(attribute.values)}"
            )
    outputs = [a.output for a in manifest.attributes]
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"output names repeat: {outputs}")
    for name, calibration in manifest.calibration.items():
        if name not in names:
            raise ValueError(f"calibration for unknown attribute {name!r}; attributes: {names}")
        n_values = len(category.attribute(name).values)
        if calibration.offsets and len(calibration.offsets) != n_values:
            raise ValueError(f"calibration of {name!r} has {len(calibration.offsets)} offsets for {n_values} values")
    decoder_category = _head_ordered(category, manifest)
    validate_rules([ConsistencyRule.from_dict(r.model_dump(by_alias=True)) for r in manifest.rules], decoder_category)


def check_members(manifest: Manifest) -> None:
    """An ensemble has two or more members and takes its largest member's input size."""
    if manifest.members is None:
        return
    if len(manifest.members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(manifest.members)}")
    largest = max(manifest.members, key=lambda m: m.image_size[0] * m.image_size[1])
    size = [manifest.preprocessing.height, manifest.preprocessing.width]
    if size != largest.image_size:
        raise ValueError(f"preprocessing size {size} is not the largest member's ({largest.name}: "
                         f"{largest.image_size})")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(directory: str | Path, *, verify_checksum: bool = True) -> Manifest:
    """Read and validate ``directory/manifest.json``; with ``verify_checksum`` the model file must exist
    and match its sha256. Raises :class:`ManifestError` naming the file and the problem."""
    folder = Path(directory)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not valid JSON ({error})") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in error.errors()
        )
        raise ManifestError(f"{path}: invalid manifest: {problems}") from None
    if verify_checksum:
        model_path = folder / manifest.model_file
        if not model_path.is_file():
            raise ManifestError(f"{model_path}: model file named by {path} is missing")
        actual = sha256_file(model_path)
        if actual != manifest.sha256:
            raise ManifestError(
                f"{model_path}: sha256 {actual} does not match the manifest's {manifest.sha256} "
                "(the file is corrupt or was replaced)"
            )
    return manifest


def list_versions(repository: str | Path, slug: str) -> list[int]:
    """Numbered version folders of one model, ascending."""
    folder = Path(repository) / slug
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def resolve_version(repository: str | Path, slug: str, version: int | None = None) -> Path:
    """The folder of ``slug`` at ``version`` (the newest when None); raises naming what exists."""
    versions = list_versions(repository, slug)
    if not versions:
        raise ManifestError(f"{Path(repository) / slug}: no numbered versions found")
    if version is None:
        return Path(repository) / slug / str(versions[-1])
    if version not in versions:
        raise ManifestError(f"{slug}: version {version} not found; available versions: {versions}")
    return Path(repository) / slug / str(version)
