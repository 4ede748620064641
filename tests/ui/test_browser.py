"""End to end in a real browser: `rag ui` on a free localhost port, driven by Playwright with Debian's chromium.

Asks a question about samples/employee-handbook.md and checks that an answer and its source appear, then
saves a screenshot to tests/ui/artifacts/chat.png (git-ignored) and the test's tmp folder. The app through a
separate `rag serve` process (RAG_SERVER_URL) is checked the same way, with `rag ingest` running beside it.

Run it:
    apt-get install -y chromium        # as root (sudo elsewhere); Playwright's own browser download is offline here
    .venv/bin/python -m pytest -q tests/ui/test_browser.py -s
Another chromium or chrome binary: RAG_TEST_CHROMIUM=/path/to/chrome. Without one the test is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
QUESTION = "How many days of paid leave do employees get?"
START_TIMEOUT_S = 90
ANSWER_TIMEOUT_MS = 180_000  # the first question loads the embedder and the generator in the server


def find_chromium() -> str | None:
    configured = os.environ.get("RAG_TEST_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, path: str = "/_stcore/health", what: str = "`rag ui`"
) -> None:
    """Until `url + path` answers 200; fails with the log's tail when `process` exits or the time is up."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"{what} did not answer on {url}{path} within {START_TIMEOUT_S} s:\n{tail}")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium not found: install it with `apt-get install -y chromium` or set RAG_TEST_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def app_url(
    chromium: str, tmp_path_factory: pytest.TempPathFactory, make_data_dir: Any, app_environment: dict[str, str]
) -> Iterator[str]:
    """`rag ui` serving a data folder with samples/ ingested; stopped after the module."""
    root = tmp_path_factory.mktemp("browser")
    data = make_data_dir(root)
    port = free_port()
    rag = Path(sys.executable).with_name("rag")
    command = [str(rag)] if rag.is_file() else [sys.executable, "-m", "rag.cli"]
    # --config goes through `rag ui` to the app (its forwarding is part of what is tested); the rest is env.
    command += ["ui", "--host", "127.0.0.1", "--port", str(port), "--config", "test"]
    env = {
        **os.environ,
        **app_environment,
        "RAG_DATA_DIR": str(data),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("RAG_CONFIG")
    log = root / "rag-ui.log"
    with log.open("wb") as out:
        # A session of its own: `rag ui` runs streamlit as a child, and stopping the group stops both.
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield url
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `rag ui` and its streamlit child; SIGKILL if they are still there after 20 s."""
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        process.poll()  # reap `rag ui`: a zombie still counts as a member of the group
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(group, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: chromium refuses to start its sandbox as root (containers, CI).
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    try:
        yield context.new_page()
    finally:
        context.close()


def test_ask_in_the_browser_shows_the_answer_and_its_source(
    app_url: str, page: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import expect

    page.goto(app_url)
    expect(page.get_by_text("Answers are", exact=False).first).to_be_visible(timeout=60_000)
    box = page.get_by_test_id("stChatInputTextArea")
    expect(box).to_be_enabled(timeout=60_000)
    box.fill(QUESTION)
    box.press("Enter")

    reply = page.get_by_test_id("stChatMessage").nth(1)  # the user's message, then the assistant's
    source = reply.get_by_test_id("stExpander").filter(has_text="employee-handbook.md").first
    expect(source).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    expect(reply.get_by_text("Sources", exact=True)).to_be_visible()
    answer = reply.get_by_test_id("stMarkdownContainer").first.inner_text()
    assert answer.strip(), "the assistant's message has no answer text"
    # The answer must be right, not just present: the handbook says 28 days ("9 days" once passed this test).
    assert "28" in answer, f"the answer does not give the handbook's 28 days: {answer!r}"
    cited = reply.get_by_test_id("stExpander").filter(has_text="— cited").first
    expect(cited).to_contain_text("employee-handbook.md")

    source.get_by_text("employee-handbook.md").first.click()  # open the source: its chunk is shown
    expect(source.get_by_text("28 days of paid leave")).to_be_visible(timeout=10_000)

    reply.scroll_into_view_if_needed()
    shot = tmp_path / "chat.png"
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / "chat.png"
    shutil.copyfile(shot, kept)
    with capsys.disabled():
        print(f"\nscreenshot: {kept} (and {shot}); answer: {answer.strip()[:120]!r}")


def test_upload_in_the_browser_indexes_the_file(app_url: str, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{app_url}/documents")
    expect(page.get_by_text("Indexed documents")).to_be_visible(timeout=60_000)
    text = b"# Parking\n\nStaff park in lot B behind the warehouse. Visitors use the two spaces by the front door.\n"
    page.locator('input[type="file"]').set_input_files(
        [{"name": "parking.md", "mimeType": "text/markdown", "buffer": text}]
    )
    expect(page.get_by_text("parking.md").first).to_be_visible(timeout=30_000)  # the uploader lists it
    page.get_by_role("button", name="Index files").click()
    expect(page.get_by_text("1 ingested, 0 unchanged, 0 duplicate, 0 failed")).to_be_visible(timeout=60_000)
    metrics = page.get_by_test_id("stMetricValue")
    expect(metrics.first).to_have_text("4")  # three samples and the upload


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def test_app_through_a_server_leaves_the_data_folder_to_ingest(
    chromium: str,
    page: Any,
    tmp_path_factory: pytest.TempPathFactory,
    make_data_dir: Any,
    app_environment: dict[str, str],
) -> None:
    """Three processes, as deployed: `rag serve` owns the data folder, `rag ui` (RAG_SERVER_URL) answers in the
    browser through it, and `rag ingest` into the same folder succeeds while the app runs, through the server
    and, once the server is stopped, on its own: the app process holds no lock on the store."""
    from playwright.sync_api import expect

    root = tmp_path_factory.mktemp("browser-remote")
    data = make_data_dir(root)
    rag = Path(sys.executable).with_name("rag")
    base = [str(rag)] if rag.is_file() else [sys.executable, "-m", "rag.cli"]
    env = {**os.environ, **app_environment, "RAG_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.pop("RAG_API_KEY", None)
    api_port, ui_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    server = spawn([*base, "serve", "--port", str(api_port), "--workers", "2"], env, root / "rag-serve.log")
    app = None
    try:
        wait_healthy(api, server, root / "rag-serve.log", "/readyz", "`rag serve`")
        client_env = {**env, "RAG_SERVER_URL": api}
        app = spawn([*base, "ui", "--port", str(ui_port)], client_env, root / "rag-ui.log")
        url = f"http://127.0.0.1:{ui_port}"
        wait_healthy(url, app, root / "rag-ui.log")

        page.goto(url)
        expect(page.get_by_text(api).first).to_be_visible(timeout=60_000)  # the sidebar names the server
        box = page.get_by_test_id("stChatInputTextArea")
        expect(box).to_be_enabled(timeout=60_000)
        box.fill(QUESTION)
        box.press("Enter")
        reply = page.get_by_test_id("stChatMessage").nth(1)
        expect(reply.get_by_test_id("stExpander").filter(has_text="— cited").first).to_contain_text(
            "employee-handbook.md", timeout=ANSWER_TIMEOUT_MS
        )
        assert "28" in reply.get_by_test_id("stMarkdownContainer").first.inner_text()

        notes = root / "canteen.md"
        notes.write_text("# Canteen\n\nThe canteen serves breakfast from 7:30 on weekdays.\n")
        through = subprocess.run([*base, "ingest", str(notes)], env=client_env, capture_output=True, text=True)
        assert through.returncode == 0, through.stderr

        # Now only the app runs: the store must be free for a local ingest. (An app that answered from the store
        # itself makes this fail: "collection 'documents' is open in another process (an ingest or the UI?)".)
        stop_group(server)
        alone = root / "parking.md"
        alone.write_text("# Parking\n\nStaff park in lot B behind the warehouse.\n")
        local = subprocess.run([*base, "ingest", str(alone)], env=env, capture_output=True, text=True)
        assert local.returncode == 0, f"the app held the store: {local.stderr}"
        assert app.poll() is None, "the app is still running"
    finally:
        if server.poll() is None:
            stop_group(server)
        if app is not None:
            stop_group(app)
