"""Load test of the catalog-attributes service: suppliers uploading one product at a time and a backfill job
sending batches.

    locust -f load_tests/locustfile.py --host http://127.0.0.1:8000 --headless -u 10 -r 5 -t 60s \
        --csv build/locust/run --only-summary

Users (FastHttpUser, keep-alive):

* ``SupplierUpload`` (weight 3): ``POST /predict`` with the category and the attributes the supplier typed
  (``declared``, from the real label row the photo was rendered from; one in five has one value swapped,
  like a supplier's slip, so conflicts show up).
* ``Backfill`` (weight 1): ``POST /batch`` with ``--batch-size`` images of mixed categories, ids and
  declared values.

Images: at test start, ``--pool-per-category`` synthetic product photos per category the service serves
(``GET /models``), rendered with ``model_training.synthetic.render_image`` from sampled real label rows; or,
with ``--images-dir DIR``, the ``train`` split of a synthetic catalog (``python -m model_training.synthetic``).

Outcomes: a 503 (queue full, or draining) is the service shedding load on purpose: it is reported as a
success under its own name (``/predict [shed 503]``, ``/batch [shed 503]``) so the CSV counts it apart.
Anything else that is not a 200 with a well-formed body is a failure. At the end, a summary is logged (and
written as JSON with ``--summary-json``), and the exit code is 1 when there were failures (locust's own
rule) or when the p95 of ``/predict`` or ``/batch`` is above ``--p95-bound-ms`` / ``--batch-p95-bound-ms``.
Every option can also be set as an environment variable (``LOCUST_P95_BOUND_MS``, ...).
"""

from __future__ import annotations

import json
import logging
import random
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner
from urllib3 import encode_multipart_formdata

log = logging.getLogger("load_tests")

PREDICT = "/predict"
BATCH = "/batch"
SHED = " [shed 503]"
TYPO_RATE = 0.2  # share of uploads whose declared attributes contain one wrong value


@dataclass(frozen=True)
class Sample:
    """One product photo and what its supplier typed."""

    name: str
    category: str
    jpeg: bytes
    declared: str  # JSON object, attribute name -> value


class Pool:
    """The images the users send, by category slug; filled at test start."""

    def __init__(self) -> None:
        self.by_category: dict[str, list[Sample]] = {}
        self.rng = random.Random(0)

    @property
    def samples(self) -> list[Sample]:
        return [s for group in self.by_category.values() for s in group]

    def pick(self) -> Sample:
        return self.rng.choice(self.rng.choice(list(self.by_category.values())))

    def pick_many(self, n: int) -> list[Sample]:
        return [self.pick() for _ in range(n)]


POOL = Pool()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--pool-per-category", type=int, default=8, env_var="LOCUST_POOL_PER_CATEGORY",
                        help="synthetic photos rendered per served category at test start")
    parser.add_argument("--images-dir", default="", env_var="LOCUST_IMAGES_DIR",
                        help="a synthetic catalog folder (train.csv, train_images/) to read instead of rendering")
    parser.add_argument("--batch-size", type=int, default=8, env_var="LOCUST_BATCH_SIZE",
                        help="images per /batch request of the backfill user")
    parser.add_argument("--p95-bound-ms", type=float, default=2000.0, env_var="LOCUST_P95_BOUND_MS",
                        help="exit 1 when the p95 of accepted /predict requests is above this")
    parser.add_argument("--batch-p95-bound-ms", type=float, default=8000.0, env_var="LOCUST_BATCH_P95_BOUND_MS",
                        help="exit 1 when the p95 of accepted /batch requests is above this")
    parser.add_argument("--api-key", default="", env_var="LOCUST_API_KEY", help="sent as X-API-Key when set")
    parser.add_argument("--summary-json", default="", env_var="LOCUST_SUMMARY_JSON",
                        help="write the end-of-run summary to this file")


def served_categories(host: str) -> list[str]:
    """The ready models' names (category slugs), from ``GET /models``."""
    with urllib.request.urlopen(f"{host.rstrip('/')}/models", timeout=10) as response:
        models = json.load(response)["models"]
    names = [m["name"] for m in models if m["ready"]]
    if not names:
        raise RuntimeError(f"{host} serves no ready model: {models}")
    return names


def with_typo(category: str, declared: dict[str, str], rng: random.Random) -> dict[str, str]:
    from catalog.taxonomy import load_taxonomy

    if not declared or rng.random() >= TYPO_RATE:
        return declared
    name = rng.choice(sorted(declared))
    others = [v for v in load_taxonomy().category(category).attribute(name).values if v != declared[name]]
    return {**declared, name: rng.choice(others)} if others else declared


def render_pool(categories: list[str], per_category: int, seed: int = 0) -> dict[str, list[Sample]]:
    """Synthetic photos of sampled real label rows; ``declared`` is the row as the supplier filled it in."""
    import numpy as np

    from model_training.synthetic import encode_jpeg, render_image, sample_rows

    rng = random.Random(seed)
    pool: dict[str, list[Sample]] = {}
    for index, slug in enumerate(categories):
        rows = sample_rows(slug, per_category, np.random.default_rng([seed, index]))
        group = []
        for i, row in enumerate(rows):
            jpeg = encode_jpeg(render_image(slug, row.full, seed=seed * 100_003 + index * 1_009 + i))
            declared = with_typo(slug, {k: v for k, v in row.observed.items() if v}, rng)
            group.append(Sample(f"{slug}-{i}.jpg", slug, jpeg, json.dumps(declared)))
        pool[slug] = group
    return pool


def read_pool(folder: Path, categories: list[str], per_category: int, seed: int = 0) -> dict[str, list[Sample]]:
    """Up to ``per_category`` images per served category from a synthetic catalog's train split."""
    from catalog.dataset import read_split
    from catalog.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    rng = random.Random(seed)
    pool: dict[str, list[Sample]] = {}
    for row in read_split(folder, "train"):
        slug = taxonomy.category(row.category).slug
        if slug not in categories or len(pool.get(slug, [])) >= per_category or row.image_path is None:
            continue
        declared = with_typo(slug, {k: v for k, v in row.labels.items() if v}, rng)
        pool.setdefault(slug, []).append(Sample(row.image_path.name, slug, row.image_path.read_bytes(),
                                                json.dumps(declared)))
    if not pool:
        raise RuntimeError(f"no images of {categories} in {folder}/train.csv")
    return pool


@events.test_start.add_listener
def _fill_pool(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner) or POOL.by_category:
        return  # the master sends no requests; workers fill their own pool
    options = environment.parsed_options
    assert environment.host, "pass --host (the service's base URL)"
    categories = served_categories(environment.host)
    if options.images_dir:
        POOL.by_category = read_pool(Path(options.images_dir), categories, options.pool_per_category)
    else:
        POOL.by_category = render_pool(categories, options.pool_per_category)
    log.info("image pool: %s", {k: len(v) for k, v in POOL.by_category.items()})


def multipart(fields: list[tuple[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body, content_type = encode_multipart_formdata(fields)
    return body, {"Content-Type": content_type}


def _headers(user: FastHttpUser, extra: dict[str, str]) -> dict[str, str]:
    key = user.environment.parsed_options.api_key if user.environment.parsed_options else ""
    return {**extra, "X-API-Key": key} if key else extra


class SupplierUpload(FastHttpUser):
    """A supplier uploading one product photo with the attributes they typed."""

    weight = 3
    wait_time = between(0.5, 1.5)

    @task
    def predict(self) -> None:
        sample = POOL.pick()
        body, headers = multipart([("image", (sample.name, sample.jpeg, "image/jpeg")),
                                   ("category", sample.category), ("declared", sample.declared)])
        with self.client.post(PREDICT, data=body, headers=_headers(self, headers), name=PREDICT,
                              catch_response=True) as response:
            if response.status_code == 503:
                response.request_meta["name"] = PREDICT + SHED
                response.success()
            elif response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
            elif "attributes" not in (response.json() or {}):
                response.failure(f"200 without attributes: {(response.text or '')[:200]}")
            else:
                response.success()


class Backfill(FastHttpUser):
    """A backfill job re-scoring old listings through ``/batch``, mixed categories in each request."""

    weight = 1
    wait_time = between(1.0, 3.0)

    @task
    def batch(self) -> None:
        options = self.environment.parsed_options
        samples = POOL.pick_many(options.batch_size if options else 8)
        fields: list[tuple[str, Any]] = [("images", (s.name, s.jpeg, "image/jpeg")) for s in samples]
        fields += [("categories", s.category) for s in samples]
        fields += [("ids", f"{i}:{s.name}") for i, s in enumerate(samples)]
        fields += [("declared", s.declared) for s in samples]
        body, headers = multipart(fields)
        with self.client.post(BATCH, data=body, headers=_headers(self, headers), name=BATCH,
                              catch_response=True) as response:
            if response.status_code == 503:
                response.request_meta["name"] = BATCH + SHED
                response.success()
                return
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                return
            items = (response.json() or {}).get("items", [])
            statuses = [item.get("status") for item in items]
            bad = [s for s in statuses if s not in (200, 503)]
            if len(items) != len(samples) or bad:
                response.failure(f"/batch items: {statuses}")
            else:
                if 503 in statuses:  # some images shed because the queue was full
                    response.request_meta["name"] = BATCH + SHED
                response.success()


def summary(environment: Environment) -> dict[str, Any]:
    """Requests, failures, shed requests, images/s and latency percentiles of the finished run."""
    stats = environment.stats
    options = environment.parsed_options
    batch_size = options.batch_size if options else 8
    out: dict[str, Any] = {"routes": {}}
    images = 0
    for entry in stats.entries.values():
        per_request = batch_size if entry.name.startswith(BATCH) else 1
        accepted = entry.num_requests - entry.num_failures
        if not entry.name.endswith(SHED):
            images += accepted * per_request
        out["routes"][entry.name] = {
            "requests": entry.num_requests, "failures": entry.num_failures, "rps": entry.total_rps,
            "p50_ms": entry.get_response_time_percentile(0.5), "p95_ms": entry.get_response_time_percentile(0.95),
            "p99_ms": entry.get_response_time_percentile(0.99), "max_ms": entry.max_response_time,
        }
    total = stats.total
    seconds = max(total.last_request_timestamp - total.start_time, 1e-9) if total.last_request_timestamp else 0.0
    out.update(
        requests=total.num_requests, failures=total.num_failures,
        shed=sum(e.num_requests for e in stats.entries.values() if e.name.endswith(SHED)),
        seconds=seconds, images_ok=images, images_per_s=images / seconds if seconds else 0.0,
        batch_size=batch_size,
    )
    return out


@events.quitting.add_listener
def _check(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or (environment.runner is not None and environment.runner.__class__.__name__ == "WorkerRunner"):
        return
    result = summary(environment)
    problems = []
    for route, bound in ((PREDICT, options.p95_bound_ms), (BATCH, options.batch_p95_bound_ms)):
        p95 = result["routes"].get(route, {}).get("p95_ms")
        if p95 is not None and p95 > bound:
            problems.append(f"{route} p95 {p95:.0f} ms > bound {bound:.0f} ms")
    if result["failures"]:
        problems.append(f"{result['failures']} unexpected failures")
    result["problems"] = problems
    log.info("summary: %s", json.dumps(result))
    if options.summary_json:
        Path(options.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(options.summary_json).write_text(json.dumps(result, indent=2) + "\n")
    if problems:
        log.error("load test failed: %s", "; ".join(problems))
        environment.process_exit_code = 1
