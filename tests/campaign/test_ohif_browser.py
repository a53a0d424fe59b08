"""OHIF v3 with MONAI Label's panel, served by labelloop at /ohif/, in a real headless Chromium driven by
Selenium, over an Orthanc DICOMweb source: open a study in the MONAI Label mode, connect the panel, run
auto-segmentation, see the labelmap, ask for the next sample; then the same with auth on after logging
in through /login. Screenshots go to ``$LABELLOOP_TEST_ARTIFACTS`` (default: the test's tmp)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from server.dicom import synth
from tests.dicom.conftest import Labelloop, Orthanc, require
from tests.dicom.test_dicomweb import to_pacs
from tests.team.conftest import PASSWORD, cli

pytestmark = pytest.mark.dicom
T = TypeVar("T")


def driver(tmp: Path) -> Any:
    webdriver = pytest.importorskip("selenium.webdriver")
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.skip("no chromedriver (apt-get install -y chromium-driver; scripts/test-servers.sh does)")
    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--use-gl=angle",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        f"--user-data-dir={tmp / 'profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=chromedriver)
    return webdriver.Chrome(options=options, service=service)


def until(what: str, check: Callable[[], T], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the page is still building
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} ({last})")


@pytest.fixture(scope="module")
def series(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> list[synth.SyntheticSeries]:
    require("storescu")
    folder = tmp_path_factory.mktemp("ohif-series")
    made = [synth.ct_series(folder / f"s{i}", 12, patient_id=f"OHIF-{i}") for i in range(2)]
    for s in made:
        to_pacs(orthanc, s)
    return made


@pytest.fixture
def labelloop(orthanc: Orthanc, series: list[synth.SyntheticSeries], tmp_path: Path) -> Iterator[Labelloop]:
    srv = Labelloop(tmp_path, ["--studies", orthanc.dicomweb, "--data-dir", str(tmp_path / "data")]).start()
    try:
        yield srv
    finally:
        srv.stop()


def click(browser: Any, css: str) -> bool:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, css).click()
    return True


def walk_the_panel(
    browser: Any,
    srv: Labelloop,
    study_uid: str,
    series_uids: list[str],
    shots: Path,
    tag: str,
    login: bool = False,
) -> None:
    from selenium.webdriver.common.by import By

    # The panel reads its server from the MONAILABEL_SERVER_URL cookie (default: port 8000 of this host).
    browser.get(f"{srv.url}/ohif/app-config.js")
    browser.add_cookie({"name": "MONAILABEL_SERVER_URL", "value": srv.url + "/", "path": "/"})
    browser.get(f"{srv.url}/ohif/monai-label?StudyInstanceUIDs={study_uid}")
    if login:  # the viewer's page sends us to the login form, which comes back here
        until("the login page", lambda: "/login" in browser.current_url)
        browser.save_screenshot(str(shots / f"ohif-{tag}-login.png"))
        browser.find_element(By.NAME, "username").send_keys("ann")
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        until("back in the viewer", lambda: "/ohif/monai-label" in browser.current_url)
    until("the MONAI Label panel", lambda: browser.find_elements(By.CSS_SELECTOR, ".monaiLabelPanel"), 120)
    until(
        "the server URL in the panel",
        lambda: browser.find_element(By.ID, "monailabelServerURL").get_attribute("value") == srv.url + "/",
    )
    until("a click on connect", lambda: click(browser, ".settingsTable .actionButton"))
    until(
        "the panel's tabs (/info/ answered)",
        lambda: browser.find_elements(By.CSS_SELECTOR, ".tabs .tab-label"),
        60,
    )
    until(
        "the study's image",
        lambda: browser.execute_script("return document.querySelectorAll('canvas').length > 0"),
        120,
    )
    browser.save_screenshot(str(shots / f"ohif-{tag}-connected.png"))
    until("the Auto-Segmentation tab", lambda: click_text(browser, ".tab-label", "Auto-Segmentation"))
    until("a click on Run", lambda: click_text(browser, ".tab-content button", "Run"))
    until(
        "the labelmap in the viewer's segmentation service",
        lambda: browser.execute_script(
            "const s = window.services.segmentationService.getSegmentations();"
            "return s.length > 0 && document.body.innerText.includes('Running Segmentation - Successful');"
        ),
        240,
    )
    segments = browser.execute_script(
        "return window.services.segmentationService.getSegmentations().flatMap("
        "s => Object.values(s.segments || {}).filter(x => x).map(x => x.label));"
    )
    assert {"liver", "tumour"} <= set(segments), segments  # the app's labels, as /infer/ named them
    browser.save_screenshot(str(shots / f"ohif-{tag}-segmented.png"))
    until("the Active Learning tab", lambda: click_text(browser, ".tab-label", "Active Learning"))
    until("a click on Next Sample", lambda: click_text(browser, "button", "Next Sample"))
    until("the next sample's form", lambda: "Active Learning - Next Sample" in browser.page_source, 60)
    assert any(uid in browser.page_source for uid in series_uids)  # the study labelloop picked
    browser.save_screenshot(str(shots / f"ohif-{tag}-next.png"))


def click_text(browser: Any, css: str, text: str) -> bool:
    from selenium.webdriver.common.by import By

    for element in browser.find_elements(By.CSS_SELECTOR, css):
        if element.is_displayed() and element.text.strip() == text:
            element.click()
            return True
    return False


def test_ohif_panel_against_labelloop(
    labelloop: Labelloop, series: list[synth.SyntheticSeries], tmp_path: Path
) -> None:
    shots = Path(os.environ.get("LABELLOOP_TEST_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    uids = [s.series_uid for s in series]
    browser = driver(tmp_path / "open")
    try:
        walk_the_panel(browser, labelloop, series[0].study_uid, uids, shots, "open")
    finally:
        browser.quit()
    log = labelloop.log.read_text() if labelloop.log else ""
    assert log  # the server ran; what the browser did is asserted above

    # Auth on: a user appears in the server's database (auth turns on within seconds), and the viewer
    # works after logging in through /login (the session cookie), though it never sends a token.
    done = cli("user", "add", "ann", "--role", "annotator", "--password", PASSWORD, "--db", db_url(labelloop))
    assert done.returncode == 0, done.stderr
    until("auth on", lambda: requests.get(f"{labelloop.url}/info/", timeout=5).status_code == 401, 30)
    browser = driver(tmp_path / "auth")
    try:
        walk_the_panel(browser, labelloop, series[1].study_uid, uids, shots, "auth", login=True)
    finally:
        browser.quit()


def db_url(srv: Labelloop) -> str:
    return f"sqlite:///{srv.workdir / 'data' / 'labelloop.db'}"
