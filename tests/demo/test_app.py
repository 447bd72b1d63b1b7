"""The Gradio app: driven through gradio_client (NER and MRE, tiny models) and in a real
headless Chromium (Debian's chromium + chromedriver, installed by .ci/run)."""

from __future__ import annotations

import io
import os
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from shapca_app.app import DemoApp, LoadedModel, find_span, load_model  # noqa: E402
from tests.helpers import random_image  # noqa: E402
from tests.helpers import TASK_GROUPS, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def mre_dir(processor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mre_model")
    model = tiny_model("mre")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def demo(trained_model_dir, mre_dir, tmp_path_factory):
    images = tmp_path_factory.mktemp("images")
    random_image(0).save(images / "tweet.jpg")
    ner, mre = load_model(str(trained_model_dir)), load_model(str(mre_dir))
    with torch.no_grad():  # a deterministic tagger: capitalised words are PER (emissions from a fixed rule)
        ner.pipe.runner.model.crf.transitions.zero_()
    return DemoApp([ner, mre], image_dir=str(images))


@pytest.fixture(scope="module")
def running(demo):
    app = demo.build()
    app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, show_error=False)
    yield app
    app.close()


def keys(demo):
    return {m.task: key for key, m in demo.models.items()}


def test_messages_for_bad_input_never_a_trace(demo, tmp_path):
    ner, mre = keys(demo)["ner"], keys(demo)["mre"]
    assert demo.predict(ner, "")[2] == "**Cannot predict:** Type a sentence first."
    assert "at most 200" in demo.predict(ner, "word " * 250)[2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert demo.predict(ner, "Kevin Durant", upload=str(broken))[2].startswith("**Cannot predict:** image")
    assert "needs the head entity" in demo.predict(mre, "Kevin Durant joins the Warriors", tail="Warriors")[2]
    assert "not in the text" in demo.predict(mre, "Kevin Durant joins", head="Kevin", tail="Lakers")[2]
    assert "No image '../secret.jpg'" in demo.predict(ner, "Kevin", location="../secret.jpg")[2]
    assert find_span(["Kevin", "Durant", "joins"], "kevin durant", "head") == [0, 2]
    assert find_span(["Kevin", "Durant", "joins"], "1:3", "head") == [1, 3]


def test_gradio_client_ner_and_mre(running, demo):
    from gradio_client import Client, handle_file

    client = Client(running.local_url, verbose=False)
    ner, mre = keys(demo)["ner"], keys(demo)["mre"]
    text = "Kevin Durant scores in Oakland"
    image = demo.image_dir / "tweet.jpg"
    highlighted, table, message = client.predict(ner, text, handle_file(str(image)), "", "A player.", "", "", True,
                                                 api_name="/predict")
    expected = demo.predict(ner, text, str(image), "", "A player.")
    assert message == expected[2] and message.startswith("Done:")
    labelled = [item for item in highlighted if item["class_or_confidence"]]
    assert [(i["token"], i["class_or_confidence"]) for i in labelled] == [(t, c) for t, c in expected[0] if c]
    highlighted, table, message = client.predict(mre, "Kevin Durant joins the Warriors", None, "tweet.jpg", "",
                                                 "Kevin Durant", "Warriors", True, api_name="/predict")
    assert message.startswith("Done: Kevin Durant -> Warriors:")
    assert table["headers"] == ["head", "relation", "tail", "score"]
    head, label, tail, score = table["data"][0]
    assert (head, tail) == ("Kevin Durant", "Warriors") and label in TASK_GROUPS["mre"]["relation"] and 0 <= score <= 1
    _, _, message = client.predict(mre, "Kevin Durant joins", None, "", "", "", "Warriors", True, api_name="/predict")
    assert message.startswith("**Cannot predict:**")


def find_browser():
    for browser, driver in (("/usr/bin/chromium", "/usr/bin/chromedriver"),):
        if os.path.exists(browser) and os.path.exists(driver):
            return browser, driver
    return None


def test_browser_submits_an_example_and_shows_highlighted_entities(running, tmp_path):
    found = find_browser()
    if found is None:
        pytest.skip("NO BROWSER: chromium and chromedriver are not installed (.ci/run installs them with apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        driver.get(running.local_url)
        wait = WebDriverWait(driver, 60)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#text textarea"))
        box.send_keys("Kevin Durant scores in Oakland")
        driver.find_element(By.CSS_SELECTOR, "#submit").click()
        wait.until(lambda d: "Done:" in d.find_element(By.CSS_SELECTOR, "#message").text)
        entities = driver.find_element(By.CSS_SELECTOR, "#entities")
        wait.until(lambda d: any(c.isdigit() for c in entities.text))  # labels carry their scores
        assert "Kevin" in entities.text
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    shot = tmp_path / "screenshot.png"
    shot.write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.shape[0] > 500 and pixels.std() > 10  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    keep = os.environ.get("SHAPCA_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_first_prediction_is_quick(demo):
    start = time.perf_counter()
    demo.predict(keys(demo)["ner"], "Kevin Durant scores in Oakland")
    assert time.perf_counter() - start < 10.0
    assert isinstance(demo.models[keys(demo)["ner"]], LoadedModel)
