"""``hpa show`` and ``hpa report`` end to end through a subprocess, and the report's HTML."""

from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2

from hpa.constants import CLASS_NAMES_2018

from .viz_fixtures import make_pred_dir

ODD = "<script>alert(\"x\")</script> & 'q'"


def hpa(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpa", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.items = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(str(a[key]))
        if tag == "figure" and "item" in (a.get("class") or "").split():
            self.items += 1


def parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def assert_links_resolve(report: Path) -> int:
    """Every href/src of every page is relative and names an existing file."""
    n = 0
    for page in report.rglob("*.html"):
        for link in parse(page).links:
            url = urlparse(link)
            assert not url.scheme and not url.netloc and not link.startswith("/"), f"{page}: {link}"
            assert (page.parent / unquote(url.path)).is_file(), f"{page}: broken link {link}"
            n += 1
    return n


def test_show_writes_one_png_per_image(pred_dir: Path, tmp_path: Path) -> None:
    images = pred_dir.parent / "images"
    labels = pred_dir.parent / "labels.csv"
    r = hpa("show", images, "--pred", pred_dir, "--out", tmp_path / "ov", "--labels", labels)
    assert r.returncode == 0, r.stderr
    for i in ("img-a", "img-b"):
        png = cv2.imread(str(tmp_path / "ov" / f"{i}.png"))
        assert png is not None and png.shape[0] > 500 and png.std() > 10
    r = hpa("show", images, "--pred", pred_dir, "--id", "img-b", "--channels", "g")
    assert r.returncode == 0, r.stderr
    assert (pred_dir / "overlays" / "img-b.png").is_file()
    assert not (pred_dir / "overlays" / "img-a.png").exists()
    r = hpa("show", images, "--pred", pred_dir, "--channels", "q", "--out", tmp_path / "x")
    assert r.returncode == 1 and "rgby" in r.stderr


def test_show_skips_a_bad_image(tmp_path: Path) -> None:
    pred = make_pred_dir(tmp_path, CLASS_NAMES_2018, {"good": 8, "bad": 8})
    (tmp_path / "images" / "bad_green.png").write_bytes(b"not a png")
    r = hpa("show", tmp_path / "images", "--pred", pred)
    assert r.returncode == 1
    assert "bad" in r.stderr and "skipped" in r.stderr
    assert (pred / "overlays" / "good.png").is_file()
    assert not (pred / "overlays" / "bad.png").exists()
    r = hpa("report", pred, "--out", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert "No overlay" in (tmp_path / "rep" / "images" / "bad.html").read_text()
    assert_links_resolve(tmp_path / "rep")


def test_report_files_and_links(pred_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = hpa("report", pred_dir, "--labels", pred_dir.parent / "labels.csv", "--out", out)
    assert r.returncode == 0, r.stderr
    assert str(out / "index.html") in r.stdout
    for rel in ("index.html", "summary.html", "f1.png", "images/img-a.html", "images/img-b.html",
                "overlays/img-a.png", "thumbs/img-b.jpg"):  # fmt: skip
        assert (out / rel).is_file(), rel
    assert max(cv2.imread(str(out / "thumbs" / "img-a.jpg")).shape[:2]) == 192
    assert parse(out / "index.html").items == 2
    assert assert_links_resolve(out) > 10
    index = (out / "index.html").read_text()
    assert 'loading="lazy"' in index and "http://" not in index and "https://" not in index
    assert "Rods &amp; rings" in (out / "summary.html").read_text()
    page = (out / "images" / "img-a.html").read_text()
    assert "Nucleoplasm" in page and "Nucleoli" in page and "<table" in page
    assert not list(tmp_path.glob(".report.*")), "temporary folder left behind"
    # a second run replaces the report as a whole
    r = hpa("report", pred_dir, "--out", out)
    assert r.returncode == 0, r.stderr
    assert not (out / "f1.png").exists()


def test_report_escapes_odd_names(tmp_path: Path) -> None:
    names = ("Nucleoplasm", ODD, "Nucleoli")
    pred = make_pred_dir(tmp_path, names, {"odd.id_1": 8})
    r = hpa("report", pred, "--out", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    for page in (tmp_path / "rep").rglob("*.html"):
        text = page.read_text()
        assert '<script>alert("x")' not in text, page
    summary = (tmp_path / "rep" / "summary.html").read_text()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;" in summary
    assert_links_resolve(tmp_path / "rep")


def test_report_missing_pred_dir(tmp_path: Path) -> None:
    r = hpa("report", tmp_path / "nope")
    assert r.returncode == 1 and "not found" in r.stderr
    shutil.rmtree(tmp_path)


def test_report_drawn_by_worker_processes_matches_one_drawn_in_process(tmp_path: Path) -> None:
    """Overlays drawn by two workers are the same files; an unreadable image still gets its page."""
    from hpa.pipelines.visualize import make_report

    ids = {f"img-{k}": 8 for k in range(9)}
    pred = make_pred_dir(tmp_path, CLASS_NAMES_2018, ids)
    (tmp_path / "images" / "img-4_green.png").write_bytes(b"not a png")
    serial = make_report(pred, out=tmp_path / "serial", workers=1).parent
    parallel = make_report(pred, out=tmp_path / "parallel", workers=2).parent
    drawn = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.suffix in (".png", ".jpg"))
    assert len(drawn) == 2 * 8 and Path("overlays/img-4.png") not in drawn
    assert drawn == sorted(
        p.relative_to(parallel) for p in parallel.rglob("*") if p.suffix in (".png", ".jpg")
    )
    for rel in drawn:
        assert (serial / rel).read_bytes() == (parallel / rel).read_bytes(), rel
    assert "No overlay" in (parallel / "images" / "img-4.html").read_text()
    assert parse(parallel / "index.html").items == 9 and assert_links_resolve(parallel) > 10


def test_cells_of_gives_each_images_rows_in_table_order(tmp_path: Path) -> None:
    """The per-image lookup (grouped once) returns exactly the rows a filter on the Id does."""
    from hpa.visualization.preddir import load_prediction_run

    pred = make_pred_dir(tmp_path, CLASS_NAMES_2018, {"img-a": 8, "img-b": 16, "img-c": 8})
    run = load_prediction_run(pred)
    for image_id in ("img-a", "img-b", "img-c"):
        expected = run.cells[run.cells["image_id"] == image_id]
        assert len(expected) > 0 and run.cells_of(image_id).equals(expected)
    assert run.cells_of("not-in-the-run").empty
    assert list(run.cells_of("img-b").columns) == list(run.cells.columns)
