"""``python -m backfill`` on a real local Ray (2 CPUs) over a small synthetic catalog and tiny ONNX models:
its rows are the service's ``/batch`` rows, hostile files fail their own rows, a run killed midway and
resumed gives every id once and the uninterrupted run's rows, and the challenge CSV scores."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from backfill.__main__ import main
from backfill.run import BackfillConfig, run_backfill
from backfill.schema import abstained_column, confidence_column
from backfill.shards import shard_folder
from benchmarks.onnx_factory import build_repository
from catalog.taxonomy import ATTRIBUTE_COLUMNS, load_taxonomy
from model_training.evaluate import main as evaluate
from model_training.synthetic.catalog_writer import build_catalog
from service.app import create_app
from service.settings import Settings
from tests import image_zoo
from tests.helpers import ROOT, write_csv

TAXONOMY = load_taxonomy()
LONG_ROWS = 1200
SHARD = 50


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo"), slugs=TAXONOMY.slugs)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    build_catalog(root, per_category=6, test_fraction=0.5, seed=0, progress=False)
    return root


def read_rows(out: Path) -> list[dict]:
    return pq.read_table(shard_folder(out)).to_pylist()


def hostile_listing(folder: Path, catalog: Path) -> Path:
    """The catalog's test images, the image zoo (good, odd and hostile files) and files that cannot be read."""
    rows = [{"id": f"shop-{r['id']}", "category": r["Category"],
             "image": f"{catalog}/test_images/{int(r['id']):06d}.jpg"}
            for r in csv.DictReader((catalog / "test.csv").open())]
    for i, specimen in enumerate(s for s in image_zoo.specimens(1024, mutants=1) if s.name != "too-large-upload.jpg"):
        (folder / specimen.name).write_bytes(specimen.data)
        rows.append({"id": f"zoo-{specimen.name}", "category": TAXONOMY.names[i % 5], "image": specimen.name})
    with (folder / "huge.jpg").open("wb") as handle:
        handle.truncate(Settings.model_fields["max_upload_bytes"].default + 1)
    rows += [{"id": "huge", "category": "Kurtis", "image": "huge.jpg"},
             {"id": "absent", "category": "Sarees", "image": "absent.jpg"}]
    return write_csv(folder / "listing.csv", rows, ["id", "category", "image"])


async def batch_answers(repository: Path, listing: Path) -> dict[str, dict]:
    """What the service's /batch answers for every readable image of the listing, by id."""
    app = create_app(Settings(repository=repository, session_threads=1, preprocess_threads=1))
    rows = [r for r in csv.DictReader(listing.open()) if r["id"] not in ("huge", "absent")]
    answers: dict[str, dict] = {}
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for start in range(0, len(rows), 64):
            chunk = rows[start:start + 64]
            files = [("images", (r["id"], (listing.parent / r["image"]).read_bytes())) for r in chunk]
            data = {"categories": [r["category"] for r in chunk], "ids": [r["id"] for r in chunk]}
            response = await client.post("/batch", files=files, data=data)
            assert response.status_code == 200, response.text
            answers.update((item["id"], item) for item in response.json()["items"])
    return answers


def assert_same_answer(row: dict, item: dict) -> None:
    if item["status"] != 200:
        assert (row["error"], row["attr_1"]) == (item["error"]["code"], None), row["id"]
        return
    result = item["result"]
    assert row["error"] is None, (row["id"], row["error_detail"])
    assert (row["model"], row["model_version"], row["category"]) == (
        result["model"], result["model_version"], result["category"])
    assert {c: row[c] for c in ATTRIBUTE_COLUMNS} == result["row"]
    category = TAXONOMY.category(result["category"])
    for name, answer in result["attributes"].items():
        column = category.attribute(name).column
        # Batches are composed differently here and in the service; the model's arithmetic may differ
        # in the last bits with the batch's size.
        assert row[confidence_column(column)] == pytest.approx(answer["confidence"], rel=1e-5, abs=1e-6)
        assert row[abstained_column(column)] is answer["abstained"]


def test_rows_equal_the_services_batch_rows_and_hostile_files_fail_only_their_rows(
        ray_address, repository, catalog, tmp_path):
    listing = hostile_listing(tmp_path, catalog)
    summary = run_backfill(BackfillConfig(repository=repository, listing=listing, out=tmp_path / "out",
                                          shard_size=16, progress=False))
    rows = read_rows(tmp_path / "out")
    assert [r["id"] for r in rows] == [r["id"] for r in csv.DictReader(listing.open())]
    answers = asyncio.run(batch_answers(repository, listing))
    for row in rows:
        if row["id"] in answers:
            assert_same_answer(row, answers[row["id"]])
    by_id = {r["id"]: r for r in rows}
    assert by_id["huge"]["error"] == "payload_too_large" and by_id["absent"]["error"] == "read_failed"
    assert by_id["zoo-bomb-png-100000x100000.png"]["error"] == "payload_too_large"
    assert by_id["zoo-eps-header.eps"]["error"] == "unsupported_media_type"
    assert by_id["zoo-truncated.jpg"]["error"] == "invalid_image"
    assert by_id["zoo-big-photo-3000x2000.jpg"]["error"] is None
    assert summary.stats.rows == len(rows) and summary.stats.errors == summary.all_errors
    assert summary.stats.errors["payload_too_large"] >= 7 and summary.stats.errors["read_failed"] == 1
    assert sum(summary.stats.errors.values()) == sum(r["error"] is not None for r in rows)
    assert all(summary.stats.seconds[stage] > 0 for stage in ("read", "decode", "infer"))


@pytest.fixture(scope="module")
def long_catalog(catalog, tmp_path_factory) -> Path:
    """The challenge layout with LONG_ROWS ids, its images hard links to the catalog's test images."""
    root = tmp_path_factory.mktemp("long")
    (root / "test_images").mkdir()
    truth = list(csv.DictReader((catalog / "test_truth.csv").open()))
    rows = []
    for i in range(LONG_ROWS):
        source = truth[i % len(truth)]
        os.link(catalog / "test_images" / f"{int(source['id']):06d}.jpg", root / "test_images" / f"{i:06d}.jpg")
        rows.append({**source, "id": i})
    write_csv(root / "test.csv", rows, ["id", "Category"])
    write_csv(root / "test_truth.csv", rows)
    return root


def command(repository: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--repository", str(repository), "--input", str(data), "--out", str(out), "--format", "csv",
            "--shard-size", str(SHARD), "--no-progress", *extra]


@pytest.fixture(scope="module")
def whole_run(ray_address, repository, long_catalog, tmp_path_factory) -> tuple[Path, str]:
    """An uninterrupted CLI run over the long catalog: its output folder and what it printed."""
    out = tmp_path_factory.mktemp("whole") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(command(repository, long_catalog, out)) == 0
    return out, printed.getvalue()


def test_the_challenge_csv_scores_with_the_evaluate_cli(whole_run, long_catalog, capsys):
    out, printed = whole_run
    assert f"backfilled {LONG_ROWS} images in {LONG_ROWS // SHARD} shards" in printed
    assert f"wrote {out / 'submission.csv'}" in printed
    assert evaluate(["--truth", str(long_catalog / "test_truth.csv"), "--pred", str(out / "submission.csv"),
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 < report["score"] <= 1
    assert {c["missing_predictions"] for c in report["categories"].values()} == {0}


def test_a_run_killed_midway_and_resumed_gives_every_id_once_and_the_same_rows(
        ray_address, repository, long_catalog, whole_run, tmp_path, capsys):
    out = tmp_path / "killed"
    environment = {**os.environ, "RAY_ADDRESS": ray_address}
    log = (tmp_path / "killed.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "backfill", *command(repository, long_catalog, out)],
                               cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(list(shard_folder(out).glob("part-*.parquet"))) < 2:  # a condition, polled
        assert process.poll() is None, (tmp_path / "killed.log").read_text()
        assert time.monotonic() < deadline, "no shard written within 120 s"
        time.sleep(0.02)
    process.kill()
    process.wait()
    written = len(list(shard_folder(out).glob("part-*.parquet")))
    assert written < LONG_ROWS // SHARD, "the run finished before it was killed: nothing was tested"

    assert main(command(repository, long_catalog, out)) == 2  # not without --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main(command(repository, long_catalog, out, "--resume")) == 0
    assert f"skipped {written * SHARD} rows already done" in capsys.readouterr().out
    resumed, whole = read_rows(out), read_rows(whole_run[0])
    assert [r["id"] for r in resumed] == [str(i) for i in range(LONG_ROWS)]
    assert resumed == whole
    assert (out / "submission.csv").read_bytes() == (whole_run[0] / "submission.csv").read_bytes()
