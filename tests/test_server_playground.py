"""The playground in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): load the
page, move a slider, send a prompt, see the answer stream in, compare preferences side by side."""

from __future__ import annotations

import shutil

import pytest
from serving import SOUP_OBJECTIVES, make_adapters, tiny_soup

from paretoalign.interfaces.server import BackgroundServer, ServerSettings, create_app, describe_policy

WAIT_S = 60


def _chromium():
    """A headless Chromium driven by Selenium, or a skip saying what is missing."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no browser to test the playground in: install Debian's chromium and chromium-driver "
                    "(.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


@pytest.fixture(scope="module")
def browser():
    driver = _chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    soup = tiny_soup(tiny_model_dir, make_adapters(tiny_model_dir, tmp_path_factory.mktemp("adapters")))
    with BackgroundServer(create_app([describe_policy("tiny-soup", soup)], ServerSettings())) as running:
        yield running


def test_move_a_slider_send_a_prompt_and_compare(browser, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(server.url + "/")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "input[data-objective]")) == len(SOUP_OBJECTIVES))
    assert "tiny-soup: method soups" in browser.find_element(By.ID, "model-info").text

    def weight(name):
        return float(browser.find_element(By.CSS_SELECTOR, f"[data-weight-of={name}]").text)

    assert weight("conciseness") == weight("informativeness") == 0.5
    slider = browser.find_element(By.CSS_SELECTOR, "input[data-objective=conciseness]")
    ActionChains(browser).move_to_element_with_offset(slider, -int(slider.size["width"] * 0.25), 0).click().perform()
    assert 0.1 < weight("conciseness") < 0.4  # clicked a quarter of the way along: the weight follows the thumb
    assert weight("conciseness") + weight("informativeness") == pytest.approx(1.0, abs=0.011)  # renormalized

    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("Tell me about the sea.")
    browser.find_element(By.ID, "send").click()
    wait.until(lambda d: "finish:" in d.find_element(By.ID, "applied").text)
    assert browser.find_element(By.ID, "answer").text.strip()
    applied = browser.find_element(By.ID, "applied").text
    assert f"conciseness={weight('conciseness'):.2f}" in applied and "merge_weights" in applied
    assert len(browser.find_elements(By.CSS_SELECTOR, "#scores tr")) == len(SOUP_OBJECTIVES)

    browser.find_element(By.ID, "compare-button").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#compare .card[data-done=true]")) == 5)
    cards = browser.find_elements(By.CSS_SELECTOR, "#compare .card")
    assert [card.find_element(By.TAG_NAME, "h3").text for card in cards][0] == "conciseness 1.00 · informativeness 0.00"
    assert all(len(card.find_elements(By.CSS_SELECTOR, "tr")) == len(SOUP_OBJECTIVES) for card in cards)
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
