"""The upload page in a real headless Chromium: choose a clip, press Score, read the verdict.

Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver) and the
`selenium` package; CI installs them (see .ci/run). The server is a real `syncnet serve` process.
"""

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="syncnet serve needs the `serve` extra (fastapi, uvicorn, python-multipart)")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip install selenium)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from synthetic import write_clip  # noqa: E402
from test_server import running_server  # noqa: E402

from syncnet.loading import save_model  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCORE_TIMEOUT = 120  # s


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"needs Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1200,1600",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_url(trained_tiny_model, tmp_path_factory):
    model_path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(trained_tiny_model, model_path)
    with running_server(model_path, tmp_path_factory.mktemp("server_tmp")) as (url, _):
        yield url


def test_upload_through_the_page(browser, page_url, tmp_path):
    clip = tmp_path / "two_faces.mp4"
    write_clip(clip, seconds=3, size=(448, 224), faces=(False, True), seed=41)  # the right-hand face speaks

    browser.get(page_url)
    browser.find_element(By.ID, "video").send_keys(str(clip))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, SCORE_TIMEOUT).until(
        lambda driver: (
            driver.find_element(By.ID, "result").is_displayed() or "error" in driver.find_element(By.ID, "status").get_attribute("class")
        )
    )
    status = browser.find_element(By.ID, "status").text
    assert status == "Scored two_faces.mp4.", status

    verdict = browser.find_element(By.ID, "verdict").text
    assert verdict.startswith(("In sync", "Out of sync", "No reliable lip sync")), verdict
    assert browser.find_element(By.ID, "offset").text.endswith(("ms)", "ms): the sound comes early", "ms): the sound comes late"))
    lse_d, lse_c = (float(browser.find_element(By.ID, name).text) for name in ("lse-d", "lse-c"))
    assert lse_d > 0 and lse_c >= 0

    rows = [row.find_elements(By.TAG_NAME, "td") for row in browser.find_elements(By.CSS_SELECTOR, "#tracks tr")]
    assert len(rows) == 2  # one row per face
    speaking = [cells for cells in rows if cells[-1].text == "speaking"]
    assert len(speaking) == 1
    assert float(speaking[0][5].text) == max(float(cells[5].text) for cells in rows) == lse_c  # the most confident face

    plot = browser.find_element(By.ID, "plot")
    WebDriverWait(browser, 30).until(
        lambda driver: driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", plot)
    )
    assert browser.execute_script("return arguments[0].naturalWidth", plot) > 0
    browser.save_screenshot(str(tmp_path / "page.png"))


def test_page_shows_a_rejection(browser, page_url, tmp_path):
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("plain text, whatever the name says\n" * 20)
    browser.get(page_url)
    browser.find_element(By.ID, "video").send_keys(str(not_a_video))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda driver: "error" in driver.find_element(By.ID, "status").get_attribute("class"))
    assert "not a video or audio file" in browser.find_element(By.ID, "status").text
    assert not browser.find_element(By.ID, "result").is_displayed()
