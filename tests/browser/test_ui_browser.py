"""The web page in a real browser: Debian's chromium (headless), driven by Playwright, against a real
uvicorn serving a small ONNX repository. Screenshots land in artifacts/screenshots/."""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.onnx_factory import build_repository
from tests.live_server import ROOT, Server, start, stop
from tests.service.fakes import image_bytes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
# Flags for a closed network: without the background-networking ones Chromium keeps dialling out.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SLUGS = ("men_tshirts", "sarees", "kurtis", "women_tshirts", "women_tops_tunics")

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"browser tests need Debian's chromium at {CHROMIUM}; .ci/run installs it")
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    running = start(build_repository(tmp_path_factory.mktemp("repo"), slugs=SLUGS), tmp_path_factory.mktemp("logs"))
    yield running
    stop(running)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_page(browser, server: Server, name: str) -> Iterator:
    """The page loaded from ``server``; a full-page screenshot named after the test when it ends."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    context.close()


@pytest.fixture
def page(browser, server, request):
    yield from open_page(browser, server, request.node.name)


def upload(page, tmp_path: Path, data: bytes, name: str = "shirt.jpg") -> None:
    path = tmp_path / name
    path.write_bytes(data)
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#preview:not([hidden])")


def test_page_lists_models_and_sample_gallery(page):
    chips = page.locator("#models .chip")
    assert chips.count() == len(SLUGS)
    assert page.locator("#category option").count() == len(SLUGS)
    assert page.locator(".gallery button").count() >= len(SLUGS)


def test_upload_shows_every_attribute_with_confidence_and_timings(page, tmp_path):
    page.select_option("#category", "men_tshirts")
    upload(page, tmp_path, image_bytes(color=(200, 40, 40)))
    page.click("#predict")
    page.wait_for_selector("#result:not([hidden])")
    rows = page.locator("#attributes tr")
    assert rows.count() == 5
    assert page.locator("#attributes tr[data-attribute=sleeve_length] .bar span").count() == 1
    assert "total" in page.inner_text("#timings") and "ms" in page.inner_text("#timings")


def test_declared_value_the_image_contradicts_is_flagged(page, tmp_path):
    page.select_option("#category", "men_tshirts")
    upload(page, tmp_path, image_bytes(color=(30, 30, 200)))
    page.fill("#threshold", "0")
    page.click("#predict")
    page.wait_for_selector("#result:not([hidden])")
    # Declare, for the attribute the model is surest of, a value other than the one it predicts.
    confident = page.evaluate("""() => [...document.querySelectorAll('#attributes tr')].map(tr => ({
        name: tr.dataset.attribute, value: tr.children[1].firstChild.textContent,
        pct: parseFloat(tr.querySelector('.pct').textContent)})).sort((a, b) => b.pct - a.pct)[0]""")
    assert confident["pct"] >= 80, "the test model should be confident about at least one attribute"
    options = page.locator(f"#declared select[data-attribute={confident['name']}] option").all_inner_texts()
    other = next(v for v in options if v not in ("—", confident["value"]))
    page.select_option(f"#declared select[data-attribute={confident['name']}]", other)
    page.click("#predict")
    page.wait_for_selector(".conflict")
    text = page.inner_text("#conflicts")
    assert f"the listing says “{other}”" in text and confident["value"] in text
    assert page.locator(f"#attributes tr.has-conflict[data-attribute={confident['name']}]").count() == 1


def test_bad_file_shows_the_api_error(page, tmp_path):
    upload_path = tmp_path / "notes.jpg"
    upload_path.write_bytes(b"this is a text file, not a JPEG")
    page.set_input_files("#file", str(upload_path))
    page.click("#predict")
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert "HTTP 422" in message and "invalid_image" in message
    assert page.locator("#result").is_hidden()


def run_batch_and_download(page) -> list[list[str]]:
    page.click("#batch-run")
    page.wait_for_selector("#batch-result:not([hidden])")
    with page.expect_download() as download_info:
        page.click("#download")
    rows = list(csv.reader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert rows[0] == ["id", "Category", "len"] + [f"attr_{i}" for i in range(1, 11)]
    assert len(rows) == 1 + page.locator("#batch-rows tr").count()
    return rows[1:]


def test_batch_of_samples_downloads_a_challenge_format_csv_with_each_sample_under_its_category(page):
    page.click("#tab-batch")
    page.click("#batch-samples")
    page.wait_for_function("document.getElementById('batch-samples').textContent.startsWith('using')")
    rows = run_batch_and_download(page)
    lengths = {"Sarees": "10", "Kurtis": "9", "Men Tshirts": "5", "Women Tshirts": "8", "Women Tops & Tunics": "10"}
    assert {row[1] for row in rows} == set(lengths) and all(row[2] == lengths[row[1]] for row in rows)


def test_batch_ids_follow_the_upload_order_and_each_file_has_its_own_category(page, tmp_path):
    files = []
    for name in ("front_0.jpg", "back_0.jpg"):  # the same digits: they cannot be the ids
        files.append(tmp_path / name)
        files[-1].write_bytes(image_bytes())
    page.click("#tab-batch")
    page.select_option("#batch-category", "men_tshirts")
    page.set_input_files("#batch-files", [str(f) for f in files])
    page.select_option("select[data-file='1']", "sarees")
    rows = run_batch_and_download(page)
    assert [(row[0], row[1]) for row in rows] == [("0", "Men Tshirts"), ("1", "Sarees")]


@pytest.mark.parametrize(("path", "selector", "text"), [
    ("/docs", ".swagger-ui .info .title", "Catalog attributes"),
    ("/redoc", "h1", "Catalog attributes"),
])
def test_the_api_docs_render_from_local_assets_only(browser, server, path, selector, text):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    outside: list[str] = []
    # blob: URLs are the page's own workers; ReDoc's footer logo is the one remote image, hidden on error.
    local = (server.url, "blob:", "https://cdn.redoc.ly/redoc/logo-mini.svg")
    page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
    page.goto(server.url + path)
    page.wait_for_selector(selector, timeout=20_000)
    assert text in page.inner_text(selector) and outside == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"api-docs{path.replace('/', '-')}.png"))
    context.close()


def test_the_gallery_offers_only_served_categories_and_a_click_switches_to_its_category(browser, tmp_path):
    repository = build_repository(tmp_path / "repo", slugs=("men_tshirts", "sarees"))
    running = start(repository, tmp_path)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto(running.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        offered = page.eval_on_selector_all(".gallery button", "buttons => buttons.map(b => b.dataset.sample)")
        assert offered and all(name.startswith(("men_tshirts", "sarees")) for name in offered)
        page.select_option("#category", "men_tshirts")
        page.click(".gallery button[data-sample^='sarees']")
        page.wait_for_function("document.getElementById('category').value === 'sarees'")
        assert missing == []  # the favicon included
        context.close()
    finally:
        stop(running)


# --- unfamiliar photos, against the committed demo repository (its models have OOD detectors) --------------


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory) -> Iterator[Server]:
    running = start(ROOT / "models" / "demo", tmp_path_factory.mktemp("demo-logs"))
    yield running
    stop(running)


@pytest.fixture
def demo_page(browser, demo_server, request):
    yield from open_page(browser, demo_server, request.node.name)


def test_page_says_the_demo_models_learned_from_synthetic_drawings(demo_page):
    assert "trained on synthetic drawings" in demo_page.locator("#demo-note").inner_text()


def test_a_real_photograph_gets_the_unfamiliar_banner_and_every_attribute_abstains(demo_page, tmp_path):
    import sklearn

    china = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    demo_page.select_option("#category", "kurtis")
    upload(demo_page, tmp_path, china.read_bytes(), "china.jpg")
    demo_page.click("#predict")
    demo_page.wait_for_selector("#result:not([hidden])")
    banner = demo_page.locator("#ood-banner")
    assert banner.is_visible()
    assert "unlike the photos this model learned from" in banner.inner_text()
    assert "No loaded category's model recognises it" in banner.inner_text()
    assert demo_page.locator("#attributes .badge", has_text="abstained").count() == \
        demo_page.locator("#attributes tr").count()


def test_the_best_fitting_category_is_a_one_click_switch(demo_page, tmp_path):
    # A synthetic Women Tshirts sample filed under Sarees: the Sarees model flags it, another model does not.
    demo_page.select_option("#category", "sarees")
    upload(demo_page, tmp_path, (ROOT / "service" / "static" / "samples" / "women_tshirts_1.jpg").read_bytes())
    demo_page.click("#predict")
    demo_page.wait_for_selector("#ood-banner:not([hidden])")
    switch = demo_page.locator("#ood-switch")
    target = switch.inner_text().removeprefix("Predict it as ")
    switch.click()
    demo_page.wait_for_selector("#ood-banner", state="hidden")
    assert demo_page.locator("#category option:checked").inner_text() == target != "Sarees"
    assert demo_page.locator("#result-model").inner_text().startswith(target)
