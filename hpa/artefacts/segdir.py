"""SEG_DIR, the folder ``hpa segment`` writes (docs/artefacts.md): its files, readers, writers.

Per image Id: ``cells/<Id>.png`` and ``nuclei/<Id>.png`` (uint16 labels) and
``tables/<Id>.parquet`` (its rows of the cells table), the table written last, so an
image is finished when all three exist. ``cells.parquet`` merges the tables;
``config.yaml`` holds the segmentation settings, ``inputs.yaml`` the images folder and
channel map, ``failures.csv`` the images that could not be segmented.

Segmentation and classification meet here, through files: this module only reads and
writes them; :mod:`hpa.segmentation.write` segments an image into a SEG_DIR.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from hpa.artefacts.folder import SETTINGS_FILE, Folder
from hpa.artefacts.provenance import RECORD_FILE, Provenance, images_fingerprint
from hpa.artefacts.tables import FAILURES_FILE, ID_COLUMN, read_parquet_table, write_failures, write_parquet
from hpa.config import load_yaml, save_yaml
from hpa.constants import CHANNELS
from hpa.errors import HPAConfigError, HPADataError
from hpa.io import read_label_image, sample_paths, write_label_image, write_text_atomic
from hpa.runlog import RUN_LOG

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np


#: Columns of ``cells.parquet`` and of each ``tables/<Id>.parquet``, in order (docs/artefacts.md).
TABLE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "cell_id",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "area",
    "centroid_y",
    "centroid_x",
    "nucleus_area",
    "touches_border",
    *(f"mean_{c}" for c in CHANNELS),
    "image_height",
    "image_width",
)


class SegDir(Folder):
    """A SEG_DIR: a folder of cell and nucleus masks and their cells table.

    >>> SegDir("seg").cell_mask("img1").as_posix()
    'seg/cells/img1.png'
    """

    CELLS = "cells"
    NUCLEI = "nuclei"
    TABLES = "tables"
    CELLS_TABLE = "cells.parquet"
    CONFIG = SETTINGS_FILE
    INPUTS = "inputs.yaml"
    FAILURES = FAILURES_FILE
    RECORD = RECORD_FILE
    CROP_CACHE = "crop-cache"
    SUBDIRS = (CELLS, NUCLEI, TABLES)
    #: The files hpa writes in a SEG_DIR (besides :data:`SUBDIRS` and the crop cache).
    FILES = (CELLS_TABLE, CONFIG, INPUTS, FAILURES, RECORD)
    #: Every name ``hpa segment`` writes in it (:func:`hpa.outputs.claim_entries`).
    ENTRIES = (*SUBDIRS, CELLS_TABLE, CONFIG, INPUTS, FAILURES, RUN_LOG, RECORD)

    # ------------------------------------------------------------ per image ---

    def cell_mask(self, image_id: str) -> Path:
        """``cells/<Id>.png``: uint16 cell labels, 0 = background."""
        return self.root / self.CELLS / f"{image_id}.png"

    def nucleus_mask(self, image_id: str) -> Path:
        """``nuclei/<Id>.png``: uint16 nucleus labels, a nucleus carrying its cell's id."""
        return self.root / self.NUCLEI / f"{image_id}.png"

    def image_table(self, image_id: str) -> Path:
        """``tables/<Id>.parquet``: the image's rows of the cells table (written last)."""
        return self.root / self.TABLES / f"{image_id}.parquet"

    def image_files(self, image_id: str) -> tuple[Path, Path, Path]:
        """``(cell mask, nucleus mask, table)`` of one image."""
        return self.cell_mask(image_id), self.nucleus_mask(image_id), self.image_table(image_id)

    def image_source(self, image_id: str) -> Path:
        """``tables/<Id>.source``: the names and sizes of the files the image was segmented
        from (:func:`source_signature`), written before its table."""
        return self.root / self.TABLES / f"{image_id}.source"

    def is_finished(self, image_id: str, source: str | None = None) -> bool:
        """True when the masks and the table of ``image_id`` all exist, and, given the
        ``source`` signature of the image's files now, they were made from those files.

        A finished image without a recorded source (an earlier hpa) counts as finished.
        """
        if not all(p.is_file() for p in self.image_files(image_id)):
            return False
        recorded = self.image_source(image_id)
        return source is None or not recorded.is_file() or recorded.read_text(encoding="utf-8") == source

    def read_cells(self, image_id: str) -> np.ndarray:
        """The ``(H, W)`` int32 cell labels of an image.

        Raises:
            HPADataError: no mask for the Id (names the file), or an unreadable one.
        """
        path = self.cell_mask(image_id)
        if not path.is_file():
            raise HPADataError(f"{path}: no cell mask for Id {image_id}; run hpa segment first")
        return read_label_image(path)

    def read_image_table(self, image_id: str) -> pd.DataFrame:
        """The rows of one image in the cells table."""
        return read_parquet_table(self.image_table(image_id))

    def write_image(
        self,
        image_id: str,
        cells: np.ndarray,
        nuclei: np.ndarray,
        table: pd.DataFrame,
        source: str | None = None,
    ) -> None:
        """Write one image's masks, the ``source`` signature of its files when given, then
        its table (whose presence marks it finished)."""
        write_label_image(self.cell_mask(image_id), cells)
        write_label_image(self.nucleus_mask(image_id), nuclei)
        if source is not None:
            write_text_atomic(self.image_source(image_id), source)
        write_parquet(self.image_table(image_id), table)

    # ------------------------------------------------------------ the folder ---

    def is_segdir(self) -> bool:
        """True when the folder has a ``cells/`` folder of masks."""
        return (self.root / self.CELLS).is_dir()

    def check(self) -> None:
        """Raise :class:`HPADataError` unless this is a segmentation folder."""
        if not self.is_segdir():
            raise HPADataError(f"{self.root}: not a segmentation folder (no cells/); run hpa segment first")

    def create(self) -> None:
        """Make the folder and its sub-folders."""
        for sub in self.SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def has_finished_images(self) -> bool:
        """True when at least one image's table exists."""
        return any((self.root / self.TABLES).glob("*.parquet"))

    def clear(self) -> None:
        """Remove hpa's files (masks, tables, settings, record, crop cache); the user's stay."""
        import shutil

        for sub in (*self.SUBDIRS, self.CROP_CACHE):
            if (self.root / sub).is_dir() and not (self.root / sub).is_symlink():
                shutil.rmtree(self.root / sub)
        for name in self.FILES:
            (self.root / name).unlink(missing_ok=True)

    @staticmethod
    def record(
        images: str | Path, settings: dict[str, Any], channel_map_spec: str | None, command: str
    ) -> Provenance:
        """The provenance record of masks made from ``images`` with ``settings``.

        Settings that do not reach the masks (the cellpose ones under the watershed
        backend) are left out, as :meth:`settings_differences` leaves them.
        """
        kept = {
            k: v
            for k, v in settings.items()
            if not (settings.get("backend") == "watershed" and k.startswith("cellpose"))
        }
        return Provenance(
            "segdir",
            command,
            {**kept, "channel_map": channel_map_spec},
            {"images": (images_fingerprint(images),)},
        )

    def read_settings(self) -> dict[str, Any] | None:
        """The segmentation settings of ``config.yaml`` (None when the file is absent).

        Raises:
            HPAConfigError: the file is not a YAML mapping.
        """
        path = self.root / self.CONFIG
        if not path.is_file():
            return None
        try:
            return load_yaml(path)
        except (ValueError, yaml.YAMLError) as exc:
            raise HPAConfigError(f"{path}: unreadable segmentation settings ({exc})") from None

    def write_settings(self, settings: dict[str, Any]) -> None:
        """Write ``config.yaml`` (the resolved segmentation settings), atomically."""
        save_yaml(self.root / self.CONFIG, settings)

    def settings_differences(self, settings: dict[str, Any]) -> list[str]:
        """The settings that differ between ``config.yaml`` and ``settings``.

        Settings that do not reach the masks (the cellpose ones under the watershed
        backend) are not compared. A SEG_DIR without ``config.yaml`` differs in nothing.

        Returns:
            One ``"name: recorded -> now"`` line per differing setting (empty: same settings).
        """
        recorded = self.read_settings()
        if recorded is None:
            return []
        watershed = settings.get("backend") == "watershed" and recorded.get("backend") == "watershed"
        names = [
            k for k in dict.fromkeys([*recorded, *settings]) if not (watershed and k.startswith("cellpose"))
        ]
        return [
            f"{k}: {recorded.get(k, '(unset)')!r} -> {settings.get(k, '(unset)')!r}"
            for k in names
            if recorded.get(k) != settings.get(k)
        ]

    def read_inputs(self) -> dict[str, Any]:
        """``inputs.yaml``: ``images`` (folder segmented) and ``channel_map`` (empty when absent)."""
        path = self.root / self.INPUTS
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return data if isinstance(data, dict) else {}

    def write_inputs(self, images: str | Path, channel_map_spec: str | None) -> None:
        """Write ``inputs.yaml``: the absolute images folder and the channel map's text."""
        save_yaml(
            self.root / self.INPUTS, {"images": str(Path(images).resolve()), "channel_map": channel_map_spec}
        )

    def write_failures(self, failures: Iterable[tuple[str, str]]) -> None:
        """Write ``failures.csv`` (``image_id,error``), sorted by Id."""
        write_failures(self.root / self.FAILURES, sorted(failures))

    def merge_tables(self, tables: Iterable[pd.DataFrame] | None = None) -> pd.DataFrame:
        """Write ``cells.parquet``: ``tables`` (default: every ``tables/<Id>.parquet``).

        Rows are sorted by ``image_id`` then ``cell_id``; written atomically.
        """
        if tables is None:
            tables = (pd.read_parquet(p) for p in sorted((self.root / self.TABLES).glob("*.parquet")))
        parts = [t for t in tables if len(t)]
        if parts:
            table = pd.concat(parts, ignore_index=True)
        else:
            table = pd.DataFrame({c: pd.Series(dtype="object") for c in TABLE_COLUMNS})
        table = table.sort_values([ID_COLUMN, "cell_id"], ignore_index=True)[list(TABLE_COLUMNS)]
        write_parquet(self.root / self.CELLS_TABLE, table)
        return table


def source_signature(images_dir: str | Path, image_id: str) -> str:
    """The names and sizes of the files of one sample (:func:`hpa.io.sample_paths`), one per
    line: an image replaced in its folder under the same Id gets another signature, a copy
    of the folder elsewhere the same one.

    Raises:
        HPADataError: the sample has no file.
    """
    return "".join(f"{p.name}\t{p.stat().st_size}\n" for p in sample_paths(images_dir, image_id))
