"""The crop cache of ``hpa train-cells``: one folder per key under a cache root.

``views.bin`` holds every view (cell crop or tile) of the images as one raw array,
``index.parquet`` says which image, cell or tile each row is, and ``meta.json`` (written
last) records shape, dtype, settings and failures. The cache root defaults to
``$HPA_CACHE_DIR``, else ``crop-cache/`` in the first SEG_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

from hpa.artefacts.folder import Folder


class CacheDir(Folder):
    """One crop cache folder (``<root>/<key>``).

    >>> CacheDir("cache").path(CacheDir.META).as_posix()
    'cache/meta.json'
    """

    VIEWS = "views.bin"
    INDEX = "index.parquet"
    META = "meta.json"
    #: The cache root's environment override and its default folder name in a SEG_DIR.
    ENV = "HPA_CACHE_DIR"
    DEFAULT_NAME = "crop-cache"

    def is_complete(self) -> bool:
        """True when the cache was finished (its ``meta.json`` exists)."""
        return self.path(self.META).is_file()

    @classmethod
    def default_root(cls, explicit: str | Path | None, seg_dir: str | Path) -> Path:
        """The cache root: ``explicit``, else ``$HPA_CACHE_DIR``, else ``SEG_DIR/crop-cache``."""
        return Path(explicit or os.environ.get(cls.ENV) or Path(seg_dir) / cls.DEFAULT_NAME)
