"""The README's set-up commands, CI's script and the lock file agree with each other.

CI must run what the README tells a new user to run, in a new environment, and the lock
(``constraints.txt``) must pin every requirement within the ranges pyproject.toml allows.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = REPO / ".ci" / "run"
LOCK = REPO / "constraints.txt"


def readme_commands() -> list[str]:
    """The shell lines of the README's 'Quick start' section, in order."""
    section = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def ci_lines() -> list[str]:
    """The commands of ``.ci/run``, comments and blank lines left out."""
    lines = [line.strip() for line in CI.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def requirements() -> list[Requirement]:
    """pyproject.toml's dependencies and its ``dev`` extra (what the test command installs)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def locked_versions() -> dict[str, str]:
    """``constraints.txt`` as {canonical name: version}."""
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a name==version pin"
            pins[canonicalize_name(name)] = version.split(";", 1)[0].strip()
    return pins


def test_readme_has_two_set_up_commands_and_a_locked_variant() -> None:
    commands = readme_commands()
    assert "python -m pip install -e . && hpa demo --out hpa-demo" in commands
    assert "python -m pip install -e '.[dev]' && python -m pytest" in commands
    assert "python -m pip install -e '.[dev]' -c constraints.txt && python -m pytest" in commands


@pytest.mark.parametrize("locked", [False, True], ids=["newest", "locked"])
def test_ci_runs_the_readme_test_command_in_a_new_environment(locked: bool) -> None:
    """Each README test command's install and test run appear in .ci/run, in order, after a new venv."""
    wanted = [c for c in readme_commands() if c.endswith("&& python -m pytest")]
    command = next(c for c in wanted if ("-c constraints.txt" in c) == locked)
    install, run = (part.strip() for part in command.split("&&"))
    lines = ci_lines()
    # CI quietens pip (-q); otherwise the install is the README's, word for word
    installs = [i for i, line in enumerate(lines) if line.replace(" -q", "") == install]
    assert installs, f".ci/run does not run the README's install: {install}"
    start = installs[0]
    assert any(line.startswith("new_env ") for line in lines[:start]), "the install is not in a new venv"
    assert run in lines[start:], f".ci/run does not run {run!r} after {install!r}"


def test_ci_lints_what_it_tests() -> None:
    text = CI.read_text(encoding="utf-8")
    assert "ruff check" in text and "ruff format --check" in text and "mypy hpa benchmarks" in text


def test_every_requirement_is_imported_before_the_tests() -> None:
    """conftest.py shields the import of each dependency; a new requirement must be listed there."""
    spec = importlib.util.spec_from_file_location("hpa_root_conftest", REPO / "conftest.py")
    assert spec is not None and spec.loader is not None
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    listed = {canonicalize_name(name) for name in root_conftest.DEPENDENCY_IMPORTS}
    missing = {canonicalize_name(r.name) for r in requirements()} - listed
    assert not missing, f"conftest.DEPENDENCY_IMPORTS lacks {sorted(missing)}"


def test_lock_pins_every_requirement_within_its_range() -> None:
    pins = locked_versions()
    for req in requirements():
        if req.marker is not None and not req.marker.evaluate({"extra": "dev"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}"
        )


def test_a_warning_raised_in_hpa_code_is_still_an_error() -> None:
    """The import shield and the plugin settings leave hpa's own warnings as errors."""
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit("old API", DeprecationWarning, "hpa/io.py", 1, module="hpa.io")
