"""2021 submissions: ``ID,ImageWidth,ImageHeight,PredictionString``.

``PredictionString`` is ``class confidence mask class confidence mask ...``: one triple
per listed (cell, class) pair, the mask as :mod:`hpa.aggregation.rle` encodes it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpa.constants import CLASS_NAMES_2021
from hpa.io import HPADataError, check_image_id, write_text_atomic

#: Header of a 2021 submission.
HEADER = ("ID", "ImageWidth", "ImageHeight", "PredictionString")


@dataclass(frozen=True)
class Row2021:
    """One image of a 2021 submission.

    Attributes:
        image_id: the Id.
        width: image width in pixels (None when unknown, e.g. an unreadable image).
        height: image height in pixels.
        predictions: ``(class, confidence, encoded mask)`` triples.
    """

    image_id: str
    width: int | None
    height: int | None
    predictions: list[tuple[int, float, str]] = field(default_factory=list)


def write_submission_2021(path: str | Path, rows: Sequence[tuple[str, int | None, int | None, str]]) -> None:
    """Write 2021 submission rows atomically, in the order given.

    Args:
        path: output CSV.
        rows: ``(Id, width, height, PredictionString)``; a None size is written empty.

    Raises:
        ValueError: a duplicated or unsafe Id.
        HPADataError: a PredictionString that :func:`read_submission_2021` would refuse
            (e.g. a NaN confidence), naming the file and the Id.
    """
    seen: set[str] = set()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for image_id, width, height, text in rows:
        check_image_id(image_id)
        if image_id in seen:
            raise ValueError(f"Id {image_id} twice in a 2021 submission")
        seen.add(image_id)
        parse_prediction_string(text, f"{path}: Id {image_id}")
        writer.writerow([image_id, "" if width is None else width, "" if height is None else height, text])
    write_text_atomic(path, buf.getvalue())


def _size(value: str, where: str, what: str) -> int | None:
    if not value.strip():
        return None
    try:
        size = int(value)
    except ValueError:
        raise HPADataError(f"{where}: {what} {value!r} is not an integer") from None
    if size <= 0:
        raise HPADataError(f"{where}: {what} {size} is not positive")
    return size


def parse_prediction_string(text: str, where: str) -> list[tuple[int, float, str]]:
    """``class confidence mask ...`` -> triples, checking each field.

    Raises:
        HPADataError: a token count not a multiple of 3, a class outside 0-18 or a
            confidence that is not a finite number (``where`` names the file and line).
    """
    tokens = text.split()
    if len(tokens) % 3:
        raise HPADataError(f"{where}: PredictionString has {len(tokens)} fields, not triples")
    out: list[tuple[int, float, str]] = []
    for k in range(0, len(tokens), 3):
        cls, conf, mask = tokens[k : k + 3]
        try:
            c, p = int(cls), float(conf)
        except ValueError:
            raise HPADataError(f"{where}: {cls!r} {conf!r} is not 'class confidence'") from None
        if not math.isfinite(p):
            raise HPADataError(f"{where}: class {c} has confidence {conf!r}, not a finite number")
        if not 0 <= c < len(CLASS_NAMES_2021):
            raise HPADataError(f"{where}: unknown class {c} (classes are 0-{len(CLASS_NAMES_2021) - 1})")
        out.append((c, p, mask))
    return out


def read_submission_2021(path: str | Path) -> list[Row2021]:
    """Read a 2021 submission.

    Returns:
        One :class:`Row2021` per line, in file order.

    Raises:
        HPADataError: missing or empty file, wrong header, a row without 4 fields, a bad
            size or PredictionString, or a duplicated Id (each with its line).
    """
    path = Path(path)
    if not path.is_file():
        raise HPADataError(f"{path}: submission file not found")
    rows: list[Row2021] = []
    seen: dict[str, int] = {}
    # lines are split by hand: a PredictionString of a crowded image outgrows the csv
    # module's field limit, and none of the four fields can hold a comma or a quote
    with path.open(encoding="utf-8-sig") as fh:
        first = fh.readline()
        if not first.strip():
            raise HPADataError(f"{path}: empty submission file")
        header = first.rstrip("\r\n").split(",")
        if tuple(h.strip().lower() for h in header) != tuple(h.lower() for h in HEADER):
            raise HPADataError(f"{path}: header {header!r}, expected '{','.join(HEADER)}' (2021 format)")
        for line_no, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}, line {line_no}"
            row = line.split(",", 3)
            if len(row) != 4:
                raise HPADataError(f"{where}: expected 4 fields ({','.join(HEADER)}), got {len(row)}")
            image_id = row[0].strip()
            try:
                check_image_id(image_id)
            except HPADataError as exc:
                raise HPADataError(f"{where}: {exc}") from None
            if image_id in seen:
                raise HPADataError(f"{where}: duplicate Id {image_id} (first on line {seen[image_id]})")
            seen[image_id] = line_no
            width, height = _size(row[1], where, "ImageWidth"), _size(row[2], where, "ImageHeight")
            rows.append(Row2021(image_id, width, height, parse_prediction_string(row[3], where)))
    return rows
