"""`glasszoo export NAME --web DIR`: the page runs each family's export in a real headless Chromium and matches onnxruntime.

For every registered family a tiny model is exported as a web folder; one
loopback HTTP server serves them all; Selenium drives Debian's Chromium
(chromium + chromium-driver) headless. In the page, onnxruntime-web
(WebAssembly) runs the batch it is given and the image picked in its file
input; every output must equal onnxruntime's in Python within 1e-4, and the
page must draw the family's pictures. Needs Chromium, ChromeDriver,
Selenium and an npm install of onnxruntime-web (`.ci/run` installs them;
the README names the commands); skipped, with the reason, where missing.
"""

import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
from test_serving import FAMILIES
from tiny_models import build

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def onnxruntime_web():
    from glasszoo.export.web_export import find_onnxruntime_web

    try:
        return find_onnxruntime_web()[0]
    except FileNotFoundError:
        return None


def missing_browser_parts():
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if onnxruntime_web() is None:
        missing.append("onnxruntime-web (npm)")
    return missing


needs_browser = pytest.mark.skipif(bool(missing_browser_parts()), reason=f"needs {', '.join(missing_browser_parts())}")


@pytest.fixture(scope="module")
def web_folders(tmp_path_factory):
    """The web export of a tiny model of every family under one root, and onnxruntime on each model.onnx."""
    from glasszoo.export import OnnxModel
    from glasszoo.export.web_export import export_web

    root = tmp_path_factory.mktemp("web")
    local = {}
    for family in FAMILIES:
        folder = export_web(build(family, seed=4), root / family, model_name=f"tiny_{family}")
        local[family] = OnnxModel(folder / "model.onnx", providers=["CPUExecutionProvider"])
    return root, local


@pytest.fixture(scope="module")
def site(web_folders):
    root, _ = web_folders
    handler = functools.partial(QuietHandler, directory=str(root))
    server = PageServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class PageServer(http.server.ThreadingHTTPServer):
    """The pages' loopback server, with a listen backlog deep enough that a busy machine drops no connection."""

    request_queue_size = 64  # socketserver's default is 5


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".mjs": "text/javascript"}

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(120)
    yield driver
    driver.quit()


PAGE_ATTEMPTS = 3


def open_page(browser, url, attempts=PAGE_ATTEMPTS, wait_s=20):
    """Loads `url` and waits for its model; a load whose script never arrived is tried again.

    On a busy machine a loopback connection can drop, and the page then has no
    `glasszoo` object. Each such load is recorded (address, ready state, the
    resources the page got and their HTTP statuses) and the page is loaded
    again, at most `attempts` times (waiting `wait_s` seconds for the object
    each time); the test fails with those records.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    loads = []
    for _ in range(attempts):
        browser.get(url)
        try:
            WebDriverWait(browser, wait_s).until(lambda driver: driver.execute_script("return typeof window.glasszoo !== 'undefined'"))
            break
        except TimeoutException:
            loads.append(browser.execute_script(
                "return {url: location.href, ready: document.readyState, resources: performance"
                ".getEntriesByType('resource').map((entry) => [entry.name, entry.responseStatus])};"
            ))
    else:
        pytest.fail(f"{url} never defined glasszoo in {attempts} loads: {loads}")
    state = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "glasszoo.ready.then(() => done('ready')).catch((error) => done('failed: ' + error));"
    )
    assert state == "ready", state


def assert_outputs_match(page_outputs, expected):
    assert sorted(page_outputs) == sorted(expected)
    for name, value in expected.items():
        got = np.asarray(page_outputs[name]["data"], "float32").reshape(page_outputs[name]["dims"])
        assert got.shape == value.shape, name
        np.testing.assert_allclose(got, value, atol=1e-4, rtol=1e-4, err_msg=name)


@needs_browser
@pytest.mark.parametrize("family", FAMILIES)
def test_page_runs_the_export_as_onnxruntime_does(family, web_folders, site, browser, samples, tmp_path):
    from glasszoo.data.image_files import read_image_files
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, local = web_folders
    open_page(browser, f"{site}/{family}/index.html")
    batch = samples[0][:4]
    outputs = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "glasszoo.run(arguments[0], arguments[1]).then(done).catch((error) => done({error: String(error)}));",
        batch.ravel().tolist(), len(batch),
    )
    assert "error" not in outputs, outputs
    assert_outputs_match(outputs, local[family](batch))

    picked = tmp_path / "picked.png"
    Image.fromarray(np.round(samples[0][9, ..., 0] * 255).astype("uint8")).save(picked)
    browser.find_element(By.ID, "file").send_keys(str(picked))
    WebDriverWait(browser, 60).until(lambda driver: driver.execute_script("return glasszoo.last() !== null"))
    last = browser.execute_script("return glasszoo.last()")
    image = read_image_files([picked], (28, 28, 1))
    np.testing.assert_allclose(np.asarray(last["input"], "float32").reshape(image.shape), image, atol=1e-6)
    assert_outputs_match(last["outputs"], local[family](image))
    metadata = json.loads((web_folders[0] / family / "metadata.json").read_text())
    picture = metadata["picture"]
    panels = 1 + bool(picture["heatmap"]) + (3 if picture["part_maps"] else 0)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pictures canvas")) == panels
    prediction = browser.find_element(By.ID, "prediction").text
    assert prediction.split(" (p = ")[0] == metadata["class_names"][int(np.argmax(last["outputs"]["logits"]["data"]))]


def test_metadata_says_what_the_page_draws(web_folders):
    root, local = web_folders
    for family in FAMILIES:
        metadata = json.loads((root / family / "metadata.json").read_text())
        model = build(family, seed=4)
        assert metadata["outputs"] == local[family].output_names
        assert metadata["input"] == {"name": local[family].input_name, "shape": [28, 28, 1], "range": [0.0, 1.0], "layout": "NHWC float32"}
        assert metadata["picture"]["heatmap"] == model.attribution_output
        for key in ("heatmap", "part_maps", "part_contributions"):
            assert metadata["picture"][key] is None or metadata["picture"][key] in metadata["outputs"]
        assert {p.name for p in (root / family).iterdir()} == {
            "model.onnx", "metadata.json", "index.html", "glasszoo-web.js",
            "ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
        }


def test_web_export_refuses_and_replaces_safely(tmp_path, monkeypatch):
    from glasszoo.export import web_export

    if onnxruntime_web() is None:
        pytest.skip("needs onnxruntime-web (npm)")
    model = build(FAMILIES[0], seed=4)
    with pytest.raises(FileNotFoundError, match="npm install"):
        web_export.export_web(model, tmp_path / "none", ort_web=tmp_path / "no-ort")
    assert not (tmp_path / "none").exists()

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a glasszoo web export"):
        web_export.export_web(model, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]

    folder = web_export.export_web(model, tmp_path / "web", model_name="first")
    before = (folder / "model.onnx").read_bytes()
    real_copy = web_export.shutil.copyfile

    def failing_copy(source, target):
        if str(target).endswith(".wasm"):
            raise OSError("disk full")
        return real_copy(source, target)

    monkeypatch.setattr(web_export.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        web_export.export_web(build(FAMILIES[0], seed=5), folder, model_name="second")
    assert json.loads((folder / "metadata.json").read_text())["model_name"] == "first"  # the previous export, whole
    assert (folder / "model.onnx").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial folder left
    monkeypatch.undo()
    web_export.export_web(build(FAMILIES[0], seed=5), folder, model_name="second")
    assert json.loads((folder / "metadata.json").read_text())["model_name"] == "second"


@needs_browser
def test_a_page_without_the_model_fails_with_what_each_load_got(site, browser):
    with pytest.raises(pytest.fail.Exception, match=r"never defined glasszoo in 2 loads") as failure:
        open_page(browser, f"{site}/no_such_model/index.html", attempts=2, wait_s=1)
    assert str(failure.value).count("'ready'") == 2
