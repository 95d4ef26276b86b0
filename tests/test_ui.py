"""The web page's files: served by the app, and the sample gallery is consistent with the taxonomy."""

import json

import httpx
import pytest

from catalog.taxonomy import load_taxonomy
from service.app import create_app
from service.routes.ui import STATIC_DIR
from service.settings import Settings
from tests.service.fakes import FakePredictor


def test_samples_cover_every_category_with_valid_labels():
    samples = json.loads((STATIC_DIR / "samples" / "samples.json").read_text())
    taxonomy = load_taxonomy()
    assert {s["category"] for s in samples} == set(taxonomy.slugs)
    for sample in samples:
        assert (STATIC_DIR / "samples" / sample["file"]).is_file()
        category = taxonomy.category(sample["category"])
        for name, value in sample["labels"].items():
            category.attribute(name).validate(value)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_page_and_assets_are_served_by_the_app(tmp_path):
    app = create_app(Settings(repository=tmp_path), predictor=FakePredictor())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/static/app.js"' in page.text
        script = await client.get("/static/app.js")
        assert script.status_code == 200 and "submissionCsv" in script.text
        assert (await client.get("/static/samples/men_tshirts_1.jpg")).headers["content-type"] == "image/jpeg"
        assert (await client.get("/static/../settings.py")).status_code == 404
