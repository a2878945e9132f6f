"""Make the documentation pictures from a real prediction run.

Writes ``docs/overlay_example.png`` (the overlay of one image, as ``hpa show`` draws it)
and ``docs/report_example.png`` (headless Chromium's screenshot of the report's gallery,
as ``hpa report`` writes it)::

    python docs/make_screenshots.py PRED_DIR IMAGES [--labels train.csv] [--id ID]

Needs a ``chromium`` binary for the report screenshot (Debian: ``apt-get install -y
chromium``); without one only the overlay is written.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from hpa.pipelines.visualize import draw_overlays
from hpa.visualization.preddir import load_prediction_run
from hpa.visualization.report import write_report
from hpa.visualization.summary import read_truth

log = logging.getLogger("make_screenshots")
DOCS = Path(__file__).resolve().parent


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 900) -> bool:
    """Chromium's headless screenshot of a local page; False where there is no chromium."""
    binary = next(
        (b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if b), None
    )
    if binary is None:
        log.warning("no chromium on PATH: %s not written", png)
        return False
    with tempfile.TemporaryDirectory() as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", page.as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return True


def main() -> int:
    """Parse the arguments and write both pictures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred", help="PRED_DIR written by 'hpa predict'")
    p.add_argument("images", help="folder of the channel files predicted")
    p.add_argument("--labels", help="label CSV: the truth in the title and the report")
    p.add_argument("--id", help="Id of the overlay example (default: the image with most cells)")
    p.add_argument("--out", default=str(DOCS), help="folder of the two PNG files")
    p.add_argument("--max-images", type=int, default=48, help="images in the report of the screenshot")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    run = load_prediction_run(args.pred)
    truth = read_truth(args.labels, run.class_names) if args.labels else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image_id = args.id or str(run.cells.groupby("image_id").size().idxmax())
    with tempfile.TemporaryDirectory() as tmp:
        written = draw_overlays(run, [image_id], tmp, images_dir=args.images, truth=truth)
        if not written:
            log.error("Id %s could not be drawn", image_id)
            return 1
        shutil.copyfile(written[0], out / "overlay_example.png")
        print(f"wrote {out / 'overlay_example.png'}")
        index = write_report(
            run, Path(tmp) / "report", images_dir=args.images, truth=truth, ids=run.ids[: args.max_images]
        )
        if screenshot(index, out / "report_example.png"):
            print(f"wrote {out / 'report_example.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
