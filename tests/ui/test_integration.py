"""The app against the real gateway (SmolLM2 in-process, MiniLM + Chroma, the sample knowledge base):
each page through AppTest, and one sign-in → question → cited answer → feedback walk in headless
Chromium. The workspace is a copy, so uploads and reviews here leave the shared one alone."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ui_support import button, mount_console, serve, sign_in, texts

from helpline.platform.context import Context
from helpline.platform.settings import GenerationSettings, RetrievalSettings, load_settings
from helpline.serving.factory import build_gateway

pytestmark = pytest.mark.integration

QUESTION = "How do I send something back to you?"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@dataclass
class RealStack:
    url: str
    keys: dict[str, str]
    app: Any
    root: Path


@pytest.fixture(scope="module")
def real(workspace_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    src = workspace_dir / ".helpline"
    root = tmp_path_factory.mktemp("ui-stack") / ".helpline"
    # Models stay where they are (the registry points at them); indexes, registry and logs are copied.
    shutil.copytree(src, root, ignore=lambda folder, _: ["models"] if Path(folder) == src else [])
    settings = load_settings(workspace=root, engine="transformers")
    settings = settings.model_copy(
        update={
            "generation": GenerationSettings(max_new_tokens=40, temperature=0.0),
            # An explicit threshold: these tests check that abstention is shown, not where it is calibrated.
            "retrieval": RetrievalSettings(**{**settings.retrieval.model_dump(), "min_score": 0.3}),
        }
    )
    app = mount_console(build_gateway(Context(settings), engine="transformers"))
    keys = {r: app.state.store.create_key(r, name=f"ui-{r}")[0] for r in ("customer", "staff", "engineer")}
    served = serve(app)
    yield RealStack(served.url, keys, app, root)
    served.stop()


@pytest.fixture
def ui(real: RealStack, monkeypatch: pytest.MonkeyPatch) -> RealStack:
    monkeypatch.setenv("HELPLINE_UI__GATEWAY_URL", real.url)
    return real


def test_chat_page_answers_from_the_knowledge_base_with_sources(ui: RealStack) -> None:
    at = sign_in(ui.keys["customer"], timeout=300)
    at.chat_input[0].set_value(QUESTION).run(timeout=300)
    assert not at.exception
    answer = at.chat_message[1].markdown[0].value
    assert len(answer.split()) >= 3
    sources = [e.label for e in at.expander]
    assert sources and any("return" in s.lower() for s in sources)
    assert len(at.expander[0].markdown[0].value) > 40  # the passage text itself
    at.feedback[0].set_value(1).run()
    turn = ui.app.state.store.turns(limit=1)[0]
    assert turn["rating"] == "up" and turn["messages"][-1]["content"] == QUESTION


def test_chat_page_hands_over_when_nothing_is_relevant(ui: RealStack) -> None:
    at = sign_in(ui.keys["customer"], timeout=300)
    at.chat_input[0].set_value("What is the airspeed velocity of an unladen swallow?").run(timeout=300)
    assert any("handing you over to a person" in w.value for w in at.warning)
    assert not at.expander


def test_kb_page_upload_search_preview_and_delete(ui: RealStack) -> None:
    at = sign_in(ui.keys["staff"], timeout=120).switch_page("views/knowledge_base.py").run()
    assert not at.exception
    listed = list(at.dataframe[0].value["Document"])
    assert len(listed) >= 20 and any(d.startswith("returns-") for d in listed)
    article = b"# Repair cafe\nEvery first Saturday our Berlin store hosts a free repair cafe for lamps.\n"
    at.file_uploader(key="kb_files").set_value(("repair-cafe.md", article, "text/markdown"))
    at.run()
    at.radio(key="kb_access").set_value("public: customers may see it").run()
    at.button(key="kb_upload").click().run()
    assert "1 indexed, 0 failed." in texts(at)
    at.text_input(key="kb_query").input("When is the free lamp repair cafe?")
    button(at, "Preview").click().run()
    assert at.expander[0].label.startswith("1. Repair cafe")
    at.selectbox[0].select("repair-cafe")
    at.checkbox[0].check()
    button(at, "Delete").click().run()
    assert "Deleted repair-cafe." in texts(at)
    assert "repair-cafe" not in list(at.dataframe[0].value["Document"])
    versions = at.dataframe[-1].value
    assert len(versions) >= 3  # the initial sync, the upload and the deletion


def test_review_page_stores_the_correct_answer(ui: RealStack) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {ui.keys['customer']}"}
    body = {"model": "helpline-support", "messages": [{"role": "user", "content": "Can I return a gift card?"}]}
    rid = httpx.post(f"{ui.url}/v1/chat/completions", json=body, headers=headers, timeout=300).json()["id"]
    httpx.post(f"{ui.url}/v1/feedback", json={"response_id": rid, "rating": "down"}, headers=headers)
    at = sign_in(ui.keys["staff"], timeout=120).switch_page("views/review.py").run()
    at.selectbox(key="review_choice").select(rid).run()
    assert "Can I return a gift card?" in texts(at)
    at.text_area(key=f"answer-{rid}").input("Gift cards cannot be returned, but they never expire.")
    button(at, "Save reviewed answer").click().run()
    assert "reviewed example(s) are ready for training" in texts(at)
    assert (ui.root / "datasets" / "reviewed" / "reviewed.jsonl").is_file()


def test_models_page_shows_the_real_registry_and_runs_a_job(ui: RealStack) -> None:
    at = sign_in(ui.keys["engineer"], timeout=120).switch_page("views/models.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= set(table["Name"])
    at.selectbox(key="job_command").select("train sft")
    at.text_input(key="job_args").input("--help-config")
    at.button(key="job_start").click().run()
    deadline = time.monotonic() + 120
    while "**succeeded**" not in texts(at) and time.monotonic() < deadline:
        time.sleep(1)
        at.run()
    assert "**succeeded**" in texts(at)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until_idle(driver: Any, *, timeout_s: float = 300.0, quiet_s: float = 2.0) -> None:
    """Wait until Streamlit has finished its script run: no "Running..." icon for ``quiet_s`` seconds."""
    from selenium.webdriver.common.by import By

    deadline, quiet_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if driver.find_elements(By.CSS_SELECTOR, "[data-testid=stStatusWidgetRunningIcon]"):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.25)
    pytest.fail(f"the app was still running after {timeout_s:.0f} s")


def _rate_up(driver: Any, log: Path, *, attempts: int = 3) -> None:
    """Click thumbs up once the page is settled, and wait for the comment box it opens.

    A click made while Streamlit redraws the page can land on an element that is being replaced and be
    lost (nothing reaches the server). The click is repeated only while the button is not selected, so
    a slow but registered click is never undone by a second one.
    """
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    thumbs_up = (By.CSS_SELECTOR, "button[aria-label='Thumbs up']")
    comment_box = (By.XPATH, "//*[contains(text(), 'Anything to add?')]")
    for _ in range(attempts):
        _until_idle(driver)
        thumb = WebDriverWait(driver, 60).until(ec.element_to_be_clickable(thumbs_up))
        try:
            if not (thumb.get_attribute("data-testid") or "").endswith("Active"):
                thumb.click()
            WebDriverWait(driver, 90).until(ec.presence_of_element_located(comment_box))
            return
        except (TimeoutException, StaleElementReferenceException):
            continue
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    pytest.fail(f"thumbs up never opened the comment box in {attempts} attempts; the UI's log ends:\n{tail}")


def test_browser_sign_in_question_cited_answer_feedback(ui: RealStack, tmp_path: Path) -> None:
    """The one end-to-end walk in a real browser (headless Debian Chromium driven by Selenium)."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from helpline.ui.launch import start_streamlit, wait_until_ready

    port = _free_port()
    app_url = f"http://127.0.0.1:{port}"
    ui_process = start_streamlit(ui.url, port, log_path=tmp_path / "streamlit.log")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1400",
                 f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):  # fmt: skip
        options.add_argument(flag)
    driver = None
    try:
        wait_until_ready(ui_process, app_url, timeout_s=120)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        wait = WebDriverWait(driver, 300)
        driver.get(app_url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=password]"))).send_keys(
            ui.keys["customer"]
        )
        driver.find_element(By.XPATH, "//button[contains(., 'Sign in')]").click()
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "textarea")))
        box.send_keys(QUESTION, Keys.ENTER)
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Sources (')]")))
        source = driver.find_element(By.CSS_SELECTOR, "[data-testid=stExpander] summary")
        assert "return" in source.text.lower()
        source.click()  # open the first source: the passage is shown
        _rate_up(driver, tmp_path / "streamlit.log")
        time.sleep(1)  # let the expander finish opening before the picture is taken
        screenshot = tmp_path / "chat.png"
        assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        turn = ui.app.state.store.turns(limit=1)[0]
        assert turn["messages"][-1]["content"] == QUESTION and turn["rating"] == "up"
        driver.find_element(By.XPATH, "//button[contains(., 'Sign out')]").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=password]")))  # back to sign-in
    finally:
        if driver is not None:
            driver.quit()
        ui_process.terminate()
        ui_process.wait(timeout=30)
