"""The command line itself: fast help, subcommands, settings precedence."""

import subprocess
import sys
import time

from hpa.cli import build_parser


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, hpa.cli; hpa.cli.build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'timm', 'cellpose', 'cv2', 'skimage') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]"
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "hpa", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "train-cells" in res.stdout
    assert time.perf_counter() - t < 5  # well under a second on an idle machine; generous for CI


MINIMAL_ARGS = {
    "synth": ["out"],
    "segment": ["imgs", "--out", "seg"],
    "train-segmenter": ["--images", "i", "--masks", "m", "--out", "o"],
    "train-cells": ["--images", "i", "--labels", "l.csv", "--masks", "m", "--out", "o"],
    "predict": ["imgs", "--model", "m", "--out", "o"],
    "evaluate": ["sub.csv", "--labels", "l.csv"],
    "show": ["imgs", "--pred", "p"],
    "report": ["p"],
    "demo": [],
}


def test_every_subcommand_parses_its_minimal_arguments():
    parser = build_parser()
    for command, rest in MINIMAL_ARGS.items():
        assert parser.parse_args([command, *rest]).command == command


def test_segment_flags_do_not_override_the_config_file_unless_given():
    args = build_parser().parse_args(["segment", "imgs", "--out", "seg"])
    assert args.backend is None and args.device is None


def test_no_command_prints_help_and_fails():
    res = subprocess.run([sys.executable, "-m", "hpa"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "COMMAND" in res.stdout
