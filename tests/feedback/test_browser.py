"""The rating page in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): a rater judges every pair with keys and clicks, flags one episode, is told when no pair
is left, and the store holds exactly those judgements.

Set RLX_RATING_SCREENSHOT=/tmp/rating_page.png to keep a screenshot of the page with a pair shown.
Deselect with `-m 'not slow and not browser'` on a machine without Chromium (a second -m
replaces the `-m 'not slow'` of pyproject's addopts)."""

import os
import threading

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from werkzeug.serving import make_server

from rlx.feedback import server
from rlx.feedback import store as S

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PROMPT = ("<|im_start|>system\nYou can call tools.\n<tools>\n{\"name\": \"calc\", \"description\": "
          "\"evaluate an arithmetic expression\"}\n</tools><|im_end|>\n<|im_start|>user\n"
          "What is (17 + 25) * 3?<|im_end|>\n<|im_start|>assistant\n")
ENV = "<|im_end|>\n<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n" \
      "<|im_start|>assistant\n"
CALL = "<tool_call>\n{{\"name\": \"calc\", \"arguments\": {{\"expr\": \"{}\"}}}}\n</tool_call>"
SCRIPT = "<img src=x onerror=alert(1)>"            # episode text is shown, never run


def episode(task: str, rounds: list[tuple[str, str]], reward: float, seed: int) -> S.EpisodeRecord:
    tokens = np.arange(seed, seed + 10, dtype=np.int32)
    return S.EpisodeRecord(
        run="main", step=120, task=task, prompt=PROMPT,
        rounds=[{"policy": policy, "env": env} for policy, env in rounds], reward=reward,
        components={"correct": reward}, info={"tool_calls": 1.0}, tokens=tokens,
        policy_mask=np.ones_like(tokens, bool))


EPISODES = [
    episode("calc/17", [("<think>I need (17 + 25) * 3; the calculator is safest.</think>\n"
                         + CALL.format("(17+25)*3"), ENV.format(126)),
                        ("<think>The tool says 126.</think>\n<answer>126</answer><|im_end|>", "")],
            reward=0.731, seed=0),
    episode("calc/17", [("<think>The grader only checks the last line.</think>\n"
                         "<answer>126</answer><|im_end|>", "")], reward=1.0, seed=100),
    episode("calc/17", [(CALL.format("17+25*3"), ENV.format(92)),
                        ("<answer>92</answer><|im_end|>", "")], reward=0.0, seed=200),
    episode("calc/18", [(f"<answer>{SCRIPT}</answer>", "")], reward=0.0, seed=300),
    episode("calc/18", [("<answer>7</answer>", "")], reward=1.0, seed=400),
]


@pytest.fixture
def served(tmp_path):
    """(store, url) of the rating app on a free port of 127.0.0.1, in a thread."""
    store = S.EpisodeStore(str(tmp_path / "feedback.sqlite"))
    store.add_episodes(EPISODES)
    http = make_server("127.0.0.1", 0, server.make_app(store), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield store, f"http://127.0.0.1:{http.server_port}/"
    http.shutdown()
    thread.join()


@pytest.fixture
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.isfile(path)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the browser tests need Debian's "
                    f"Chromium (`apt-get install chromium chromium-driver`), or deselect them "
                    f"with -m 'not slow and not browser'", pytrace=False)
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,950"):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def shown_pair(driver) -> tuple[int, int]:
    return tuple(int(driver.find_element(By.ID, f"episode-{side}").get_attribute("data-episode"))
                 for side in ("left", "right"))


def message(driver) -> str:
    return driver.find_element(By.ID, "message").text


def wait_for_next(driver, previous: tuple[int, int] | None) -> tuple[int, int] | None:
    """Waits for a pair other than `previous` (returned) or the "no pair left" message (None)."""
    def ready(d):
        if "No pair left" in message(d):
            return "done"
        if d.find_element(By.ID, "pair").is_displayed() and shown_pair(d) != previous:
            return shown_pair(d)
        return False
    shown = WebDriverWait(driver, 10).until(ready)
    return None if shown == "done" else shown


def press(driver, *keys) -> None:
    ActionChains(driver).send_keys(*keys).perform()


def stored(pair: tuple[int, int], side: str) -> tuple[int, int, str]:
    """The judgement the store keeps for `side` ('left', 'right', 'tie') of a shown pair."""
    left, right = pair
    winner = {"left": left, "right": right}.get(side)
    choice = "tie" if winner is None else ("first" if winner == min(pair) else "second")
    return min(pair), max(pair), choice


def test_a_rating_session(served, browser):
    store, url = served
    browser.get(url)
    rater = browser.find_element(By.ID, "rater")
    rater.send_keys("ana", Keys.ENTER)
    pair = wait_for_next(browser, None)
    expected = []

    def check_page():
        """Each pair shows run and step, never the reward; the calc/17 pairs their rounds."""
        page = browser.find_element(By.ID, "pair").text
        assert "run main · step 120" in page and "0.731" not in page
        if all(store.episode(i).task == "calc/17" for i in pair):
            assert "thinking" in page and "tool call" in page and "tool's answer" in page
            if os.environ.get("RLX_RATING_SCREENSHOT"):
                browser.save_screenshot(os.environ.pop("RLX_RATING_SCREENSHOT"))
        else:   # the pair with markup in its text shows the text
            assert SCRIPT in page and not browser.find_elements(By.CSS_SELECTOR, "#pair img")

    # 1. Keyboard only: left is better.
    check_page()
    press(browser, "1")
    press(browser, Keys.ENTER)
    expected.append(stored(pair, "left"))
    pair = wait_for_next(browser, pair)

    check_page()
    # 2. Clicks: right is better, and the left episode is flagged as reward hacking.
    Select(browser.find_element(By.ID, "flag-left-kind")).select_by_value("hacking")
    browser.find_element(By.ID, "flag-left-reason").send_keys("answers without computing")
    browser.find_element(By.ID, "right").click()
    browser.find_element(By.ID, "submit").click()
    expected.append(stored(pair, "right"))
    flagged = (pair[0], "hacking", "answers without computing")
    pair = wait_for_next(browser, pair)

    check_page()
    # 3. A flag without a reason is refused by the page; then unflagged, a tie with arrows.
    Select(browser.find_element(By.ID, "flag-right-kind")).select_by_value("unsafe")
    browser.find_element(By.ID, "tie").click()
    browser.find_element(By.ID, "submit").click()
    assert "reason is required" in message(browser) and shown_pair(browser) == pair
    Select(browser.find_element(By.ID, "flag-right-kind")).select_by_value("")
    browser.find_element(By.TAG_NAME, "h1").click()     # focus off the menu: keys choose again
    press(browser, Keys.ARROW_RIGHT, Keys.ARROW_DOWN)     # the last key pressed wins
    press(browser, Keys.ENTER)
    expected.append(stored(pair, "tie"))
    pair = wait_for_next(browser, pair)

    # 4. Right is better, by key.
    check_page()
    press(browser, "2", Keys.ENTER)
    expected.append(stored(pair, "right"))
    assert wait_for_next(browser, pair) is None
    assert "No pair left for rater ana" in message(browser)
    assert not browser.find_element(By.ID, "pair").is_displayed()
    assert browser.find_element(By.ID, "count").text.startswith("judged by you: 4")

    judgements = store.judgements()
    assert sorted((j.first, j.second, j.choice) for j in judgements) == sorted(expected)
    assert {j.rater for j in judgements} == {"ana"}
    assert [f for j in judgements for f in j.flags] == [flagged]
    assert store.count() == {"episodes": 5, "judgements": 4, "flags": 1}

    # The rater id is remembered: a reload goes straight to the (empty) queue.
    browser.refresh()
    WebDriverWait(browser, 10).until(lambda d: "No pair left" in message(d))
    assert browser.find_element(By.ID, "rater").get_attribute("value") == "ana"
