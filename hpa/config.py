"""Small typed configs: frozen dataclasses, loaded from YAML and overridden by flags.

Each stage defines its own dataclass; this module only loads, merges and saves them, so
the resolved settings can be written beside every output.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hpa.errors import HPAConfigError
from hpa.io import write_text_atomic

log = logging.getLogger(__name__)

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = " ".join(str(exc).split())
        raise HPAConfigError(f"{path}: not a valid UTF-8 YAML settings file ({problem})") from None
    if not isinstance(data, dict):
        raise HPAConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def from_dict(
    cls: type[T], data: dict[str, Any], source: str = "config", spelling: Spelling | None = None
) -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name.

    Args:
        cls: the settings dataclass.
        data: setting values by field name.
        source: where ``data`` came from, named in errors (a file, ``settings``).
        spelling: name a refused setting as this caller does (an API's arguments)
            instead of ``source: key=value``.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        shown = [spelling(u) for u in unknown] if spelling else unknown
        where = spelling.prefix() if spelling else f"{source}: "
        raise HPAConfigError(f"{where}unknown setting(s) {shown}; known: {sorted(names)}")
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            v = data[f.name]
            # YAML and JSON give lists where the dataclass holds tuples.
            values[f.name] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**values)
    except SettingError as exc:
        raise HPAConfigError(exc.named(spelling) if spelling else f"{source}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise HPAConfigError(f"{source}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Spelling:
    """How the caller names a setting in messages: a CLI flag, or an API function's argument.

    One check serves the ``hpa`` command and the Python API; each message names the
    setting as its user wrote it.

    Attributes:
        api: the API function (``hpa.predict_folder``); None for the command line.
        flags: settings whose flag is not ``--<name with dashes>`` (``fmt``: ``--format``).

    >>> api = Spelling("hpa.predict_folder")
    >>> CLI("min_cell_score"), api("min_cell_score")
    ('--min-cell-score', 'min_cell_score')
    >>> CLI.given("fmt", "2019"), api.given("fmt", "2019"), CLI.needs("truth", "DIR"), api.needs("truth", "DIR")
    ('--format 2019', "fmt='2019'", '--truth DIR', 'truth=DIR')
    """

    api: str | None = None
    flags: tuple[tuple[str, str], ...] = (("fmt", "--format"), ("model_dir", "--model"))
    #: settings whose API argument has another name (``format``: ``fmt``)
    arguments: tuple[tuple[str, str], ...] = ()

    def __call__(self, name: str) -> str:
        if self.api is not None:
            return dict(self.arguments).get(name, name)
        return dict(self.flags).get(name, "--" + name.replace("_", "-"))

    def given(self, name: str, value: Any) -> str:
        """The setting as given: ``--format 2019`` or ``fmt='2019'``."""
        if self.api is not None:
            return f"{self(name)}={value!r}"
        shown = " ".join(map(str, value)) if isinstance(value, list | tuple) else value
        return f"{self(name)} {shown}"

    def needs(self, name: str, meta: str) -> str:
        """The setting as asked for: ``--truth DIR`` or ``truth=DIR``."""
        return f"{self(name)}={meta}" if self.api is not None else f"{self(name)} {meta}"

    def prefix(self) -> str:
        """``"hpa.predict_folder: "`` for the API, nothing for the command line."""
        return f"{self.api}: " if self.api else ""


#: Settings named as ``hpa`` flags.
CLI = Spelling()


class SettingError(HPAConfigError):
    """A refused setting value: which setting, the value, and why.

    Raised by the settings dataclasses' checks; :func:`from_dict` and :func:`resolve`
    name the setting as their caller does (:class:`Spelling`: a flag, an API argument,
    or the key of a settings file). ``against``: the other setting and its value where
    the two conflict, named the same way at the end of the message.
    """

    def __init__(
        self, setting: str, value: Any, problem: str, against: tuple[str, Any] | None = None
    ) -> None:
        self.setting, self.value, self.problem, self.against = setting, value, problem, against
        super().__init__(
            f"{setting}={value!r}: {problem}{'' if against is None else f' {against[0]}={against[1]!r}'}"
        )

    def named(self, names: Spelling) -> str:
        """The message with the setting (and the one it conflicts with) as ``names`` spells it.

        >>> error = SettingError("min_cell_score", 0.2, "applies to 2021 only, not to", ("format", "2018"))
        >>> str(error), error.named(CLI)
        ("min_cell_score=0.2: applies to 2021 only, not to format='2018'", '--min-cell-score 0.2: applies to 2021 only, not to --format 2018')
        """
        other = "" if self.against is None else " " + names.given(*self.against)
        return f"{names.prefix()}{names.given(self.setting, self.value)}: {self.problem}{other}"


def check_count(value: Any, name: str, minimum: int = 1, optional: bool = False) -> None:
    """Raise unless ``value`` is an integer >= ``minimum`` (or None when ``optional``).

    >>> check_count(3, "epochs")
    >>> check_count(0, "epochs")
    Traceback (most recent call last):
    ...
    hpa.errors.HPAConfigError: epochs must be an integer >= 1, got 0
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HPAConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def resolve(
    cls: type[T],
    yaml_path: str | Path | None = None,
    *,
    build: Callable[[dict[str, Any], str], T] | None = None,
    **flags: Any,
) -> T:
    """The one settings path of every command: defaults, then the YAML file, then flags.

    Args:
        cls: the settings dataclass; its field defaults are the defaults.
        yaml_path: a ``--config`` file of settings (``safe_load``; unknown keys are errors).
        build: makes the settings from the merged mapping and the name of its source,
            where the defaults depend on a setting (``TrainConfig.from_settings``: the
            device's); default :func:`from_dict` of ``cls``.
        **flags: explicit command-line values; None means "not given" and leaves the
            YAML's or default value.

    Raises:
        HPAConfigError: an unknown setting or a bad value, naming the YAML file.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class S:
    ...     a: int = 1
    ...     b: int = 2
    >>> resolve(S, None, a=None, b=5)
    S(a=1, b=5)
    """
    data: dict[str, Any] = {}
    if yaml_path:
        data.update(load_yaml(yaml_path))
    given = {k: v for k, v in flags.items() if v is not None}
    data.update(given)
    source = str(yaml_path or "settings")
    try:
        return build(data, source) if build is not None else from_dict(cls, data, source=source)
    except HPAConfigError as exc:
        cause = exc.__cause__
        if isinstance(cause, SettingError) and cause.setting in given:
            raise HPAConfigError(cause.named(CLI)) from None  # a flag: named as the flag
        raise


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain YAML/JSON-safe types (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def save_yaml(path: str | Path, data: dict[str, Any]) -> None:
    """Write a mapping as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def save_json(path: str | Path, data: Any) -> None:
    """Write JSON (indented), atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def load_json_object(path: str | Path, *, missing: str = "not found") -> dict[str, Any]:
    """A JSON file that holds one object (a record hpa wrote).

    Raises:
        HPAConfigError: the file is missing (``missing`` says what that means), not JSON,
            or not an object; names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HPAConfigError(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HPAConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HPAConfigError(f"{path}: expected a JSON object")
    return data


def log_settings(title: str, settings: dict[str, Any]) -> None:
    """Log every resolved setting, one per line, so runs are reproducible from the log."""
    log.info("%s:", title)
    for k, v in settings.items():
        log.info("  %s: %s", k, v)


def resolve_device(device: str = "auto") -> str:
    """``"cuda"`` if asked for (or ``"auto"`` and a GPU is present), else ``"cpu"``.

    Raises:
        HPAConfigError: ``"cuda"`` was asked for and no CUDA device is visible, or an
            unknown device.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise HPAConfigError(f"--device {device!r}: expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        raise HPAConfigError(
            f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA device; use --device cpu or auto"
        )
    return device


def default_workers() -> int:
    """Worker processes to use by default: the CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
