"""Screenshot the try-it page answering one upload, for the README (a real server, a real browser).

    python scripts/screenshot_page.py --image PHOTO --category SLUG --out docs/web-page-unfamiliar.png
        [--repository models/demo] [--chromium /usr/bin/chromium]

Starts ``python -m service`` on a free port with the repository, opens the page in headless Chromium
(Playwright), uploads the image under the category, waits for the answer and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # not listening yet: poll again
    raise SystemExit(f"the service was not ready within {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repository", type=Path, default=Path("models/demo"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "service", "--repository", str(args.repository),
                               "--port", str(port), "--log-level", "warning"])
    try:
        wait_ready(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready=true]")
            page.select_option("#category", args.category)
            page.set_input_files("#file", str(args.image))
            page.wait_for_selector("#preview:not([hidden])")
            page.click("#predict")
            page.wait_for_selector("#result:not([hidden])")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
