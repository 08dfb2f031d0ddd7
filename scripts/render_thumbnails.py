"""Draw the template thumbnail of each shared workflow: ``example_workflows/<name>.jpg`` (square JPEG).

ComfyUI's template browser shows ``<name>.jpg`` next to ``<name>.json`` as the card's picture. A workflow that names
a SaveImage node in ``thumbnail_from`` (scripts/workflow_builder/definitions.py) runs here, on a headless server, and
that node's image becomes its thumbnail (the quick start: the digits SODA drew). The others need weights this machine
does not have (Flux.1-dev); their thumbnail is a picture of the graph as the editor shows it (headless Chromium).

Usage (from the repository root; needs the development environment, chromium and chromedriver):
    .venv/bin/python scripts/render_thumbnails.py              # every workflow
    .venv/bin/python scripts/render_thumbnails.py soda_flux_dev
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from comfy_server import ROOT, ComfyServer, ComfyServerError, prepare_base_dir, stop_on_signals
from workflow_builder import API_DIR, THUMBNAIL_SUFFIX, WORKFLOWS_DIR
from workflow_builder.definitions import WORKFLOWS


SIZE = 512  # pixels, square like ComfyUI's own template thumbnails
JPEG_QUALITY = 88
BACKGROUND = (32, 32, 32)  # padding around a picture that is not square: the editor's canvas grey
WINDOW = (1400, 1400)
EDITOR_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.Persist": False,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Workflow.ShowMissingModelsWarning": False,  # the Flux.1-dev weights are absent here
}
RUN_TIMEOUT_S = 1800.0
GRAPH_GROUPS = ("1.", "2.")  # a graph thumbnail shows these groups (model and prompt, SODA), big enough to read
GRAPH_BOUNDS_SCRIPT = """
const [name, prefixes, done] = arguments;
(async () => {
  const response = await fetch(`/api/workflow_templates/comfyui-soda/${name}.json`);
  await app.loadGraphData(await response.json());
  const groups = app.graph._groups.filter((g) => prefixes.some((p) => g.title.startsWith(p)));
  const boxes = groups.length ? groups.map((g) => g._bounding) : app.graph._nodes.map((n) => n.getBounding());
  const x0 = Math.min(...boxes.map((b) => b[0])), y0 = Math.min(...boxes.map((b) => b[1]));
  const x1 = Math.max(...boxes.map((b) => b[0] + b[2])), y1 = Math.max(...boxes.map((b) => b[1] + b[3]));
  const ds = app.canvas.ds, canvas = app.canvas.canvas, scale = window.devicePixelRatio || 1;
  const [width, height] = [canvas.width / scale, canvas.height / scale];
  ds.scale = 0.98 * Math.min(width / (x1 - x0), height / (y1 - y0));
  ds.offset = [width / (2 * ds.scale) - (x0 + x1) / 2, height / (2 * ds.scale) - (y0 + y1) / 2];
  app.graph.setDirtyCanvas(true, true);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const rect = canvas.getBoundingClientRect();
  const corner = (x, y) => [rect.left + (x + ds.offset[0]) * ds.scale, rect.top + (y + ds.offset[1]) * ds.scale];
  return [...corner(x0, y0), ...corner(x1, y1)].map((v) => v * scale);
})().then(done, (error) => done({error: String(error.stack || error)}));
"""


class ThumbnailError(RuntimeError):
    pass


def square(image: Image.Image) -> Image.Image:
    """The image scaled to fit SIZE x SIZE, centred on the canvas grey."""
    image = image.convert("RGB")
    image.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    canvas.paste(image, ((SIZE - image.width) // 2, (SIZE - image.height) // 2))
    return canvas


def output_image(server: ComfyServer, name: str, title: str) -> Image.Image:
    """Run the API twin and return the first image of the SaveImage node titled ``title``."""
    workflow = json.loads((API_DIR / f"{name}.json").read_text())
    ids = [key for key, node in workflow.items() if (node.get("_meta") or {}).get("title") == title]
    if len(ids) != 1:
        raise ThumbnailError(f"{name}: {len(ids)} nodes titled {title!r} (thumbnail_from needs exactly one)")
    print(f"{name}: running it for the image of {title!r}", flush=True)
    history = server.run(workflow, timeout=RUN_TIMEOUT_S)
    images = ((history.get("outputs") or {}).get(ids[0]) or {}).get("images") or []
    if not images:
        raise ThumbnailError(f"{name}: node {ids[0]} ({title!r}) saved no image")
    first = images[0]
    return Image.open(server.base_dir / first["type"] / first.get("subfolder", "") / first["filename"])


def open_browser(server: ComfyServer, profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise ThumbnailError(
            "graph thumbnails need chromium and chromedriver (apt-get install chromium chromium-driver)"
        )
    for key, value in EDITOR_SETTINGS.items():
        server._request("POST", f"/api/settings/{key}", value)
    options = Options()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.add_argument(f"--user-data-dir={profile}")
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_script_timeout(120)
    chrome.get(server.url + "/")
    deadline = time.monotonic() + 120
    while not chrome.execute_script("return !!(window.app && window.app.vueAppReady && window.app.graph)"):
        if time.monotonic() > deadline:
            chrome.quit()
            raise ThumbnailError(f"the editor at {server.url} was not ready after 120 s")
        time.sleep(0.25)
    chrome.execute_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
    return chrome


def graph_image(browser: Any, name: str, screenshot: Path) -> Image.Image:
    """The workflow as the editor shows it, zoomed to and cropped around its groups ``GRAPH_GROUPS``."""
    print(f"{name}: drawing its graph in the editor", flush=True)
    box = browser.execute_async_script(GRAPH_BOUNDS_SCRIPT, name, list(GRAPH_GROUPS))
    if isinstance(box, dict):
        raise ThumbnailError(f"{name}: the editor could not load it: {box['error']}")
    browser.save_screenshot(str(screenshot))
    picture = Image.open(screenshot)
    left, top, right, bottom = (round(v) for v in box)
    return picture.crop((max(left, 0), max(top, 0), min(right, picture.width), min(bottom, picture.height)))


def render(names: list[str]) -> list[Path]:
    workflows = {workflow.name: workflow for workflow in (make() for make in WORKFLOWS)}
    unknown = sorted(set(names) - set(workflows))
    if unknown:
        raise ThumbnailError(f"unknown workflow(s) {unknown}; defined: {sorted(workflows)}")
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="soda-thumbnails-") as tmp:
        with ComfyServer(base_dir=prepare_base_dir(Path(tmp) / "base")) as server:
            browser = None
            try:
                for name in names or sorted(workflows):
                    workflow = workflows[name]
                    if workflow.thumbnail_from:
                        picture = output_image(server, name, workflow.thumbnail_from)
                    else:
                        browser = browser or open_browser(server, Path(tmp) / "chromium")
                        picture = graph_image(browser, name, Path(tmp) / f"{name}.png")
                    target = WORKFLOWS_DIR / f"{name}{THUMBNAIL_SUFFIX}"
                    square(picture).save(target, "JPEG", quality=JPEG_QUALITY, optimize=True)
                    written.append(target)
                    print(f"wrote {target.relative_to(ROOT)} ({target.stat().st_size // 1024} KiB)", flush=True)
            finally:
                if browser is not None:
                    browser.quit()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workflow names (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    stop_on_signals()
    try:
        render(args.names)
    except (ThumbnailError, ComfyServerError, OSError) as error:
        print(f"render_thumbnails: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
