"""The base of the layout classes: a folder and the paths of its named files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: A command's resolved settings, in the folder it writes (SEG_DIR, PRED_DIR, demo).
SETTINGS_FILE = "config.yaml"
#: Tuned per-class thresholds (MODEL_DIR) or the thresholds applied (PRED_DIR).
THRESHOLDS_FILE = "thresholds.json"


@dataclass(frozen=True)
class Folder:
    """A folder of one layout; subclasses name its files as class attributes.

    >>> Folder("out").path("x.csv").as_posix()
    'out/x.csv'
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    def path(self, name: str) -> Path:
        """The path of one of the folder's entries (one of its class's names)."""
        return self.root / name
