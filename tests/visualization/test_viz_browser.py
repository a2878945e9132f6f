"""The report in headless Chromium: no console errors, a real screenshot, a working gallery."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (apt-get install -y chromium)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", "--hide-scrollbars", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report(pred_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "report"
    args = ["report", str(pred_dir), "--labels", str(pred_dir.parent / "labels.csv"), "--out", str(out)]
    r = subprocess.run(
        [sys.executable, "-m", "hpa", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stderr
    return out


def test_gallery_runs_without_console_errors(report: Path, tmp_path: Path) -> None:
    r = chromium(tmp_path / "profile", "--dump-dom", (report / "index.html").as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    assert console_lines(r.stderr) == []
    assert len(re.findall(r'<figure class="item"', r.stdout)) == 2
    shown = re.search(r'id="gallery"[^>]*data-shown="(\d+)"', r.stdout)
    assert shown is not None, "the gallery script did not run"
    assert shown.group(1) == "2"
    assert "showing 2 of 2 images" in r.stdout


@pytest.mark.parametrize("page", ["index.html", "summary.html", "images/img-a.html"])
def test_pages_screenshot(report: Path, tmp_path: Path, page: str) -> None:
    shot = tmp_path / "shot.png"
    r = chromium(
        tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,900", (report / page).as_uri()
    )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    assert console_lines(r.stderr) == []
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (900, 1280)
    assert img.std() > 20, "blank screenshot"
