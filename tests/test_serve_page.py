"""The server's web page in a real headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium): type a prompt and see text stream in, upload a scene and see its caption
and n-best list, a page without a captioner shows no caption panel, and a screenshot that is
not blank."""

import io
import os
import shutil

import pytest

pytest.importorskip("starlette")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from helpers import SMALL_TEXT  # noqa: E402
from test_serve_process import start_server  # noqa: E402
from textgen import resources  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium-driver)",
    ),
]
SCENE = os.path.join(os.path.dirname(__file__), "..", "data", "samples", "val_000000.png")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,900"):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def text_run(train_tiny_run):
    return train_tiny_run("serve_page", SMALL_TEXT * 3, max_steps=10)


@pytest.fixture(scope="module")
def server(text_run):
    process, url = start_server(f"{text_run}=tiny", f"{resources.bundled_model('shapes')}=shapes")
    yield url
    process.terminate()
    process.wait(30)


def wait(browser, condition, seconds=60):
    return WebDriverWait(browser, seconds).until(lambda driver: condition())


def test_type_a_prompt_and_watch_the_text_stream_in(browser, server):
    browser.get(server + "/")
    wait(browser, lambda: browser.find_element(By.ID, "text-panel").is_displayed())
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("First ")
    length = browser.find_element(By.ID, "length")
    length.clear()
    length.send_keys("300")
    browser.find_element(By.ID, "generate").click()
    output = browser.find_element(By.ID, "output")
    wait(browser, lambda: output.get_attribute("data-done") == "1")
    text = output.text
    assert text.startswith("First ") and len(text) > 200, text
    assert browser.find_element(By.ID, "text-error").text == ""


def test_upload_a_scene_and_see_its_caption_and_n_best_list(browser, server, tmp_path):
    browser.get(server + "/")
    wait(browser, lambda: browser.find_element(By.ID, "caption-panel").is_displayed())
    browser.find_element(By.ID, "image").send_keys(os.path.abspath(SCENE))
    caption = browser.find_element(By.ID, "caption")
    wait(browser, lambda: caption.text != "")
    items = browser.find_elements(By.CSS_SELECTOR, "#nbest li")
    assert len(items) == 3 and items[0].text.startswith(caption.text)
    assert "purple" in caption.text or "triangle" in caption.text, caption.text
    # The screenshot: the page drawn with its image, caption and text, not a blank window.
    from PIL import Image, ImageStat

    png = browser.get_screenshot_as_png()
    (tmp_path / "page.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.size[0] >= 900
    assert ImageStat.Stat(image).stddev[0] > 10, "the screenshot is blank"


def test_a_server_without_a_captioner_shows_no_caption_panel(browser, server):
    # The page asks /models what is loaded; here it is told "one text model only", as a server
    # without a captioner answers (test_serve.py checks that answer), and redraws itself.
    browser.get(server + "/")
    wait(browser, lambda: browser.find_element(By.ID, "caption-panel").is_displayed())
    browser.execute_script(
        """
        const answer = {models: [{name: "only", kind: "text", labels: [], streams: true}]};
        window.fetch = async () => new Response(JSON.stringify(answer));
        load();
        """
    )
    wait(browser, lambda: "only (text)" in browser.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "text-panel").is_displayed()
    assert not browser.find_element(By.ID, "caption-panel").is_displayed()
