import os

import numpy as np

from hpa.classification.cache import build_cache, cache_key, channel_stats, load_views
from hpa.classification.crops import CropSettings
from hpa.io import list_image_ids


def test_cache_holds_every_view_and_is_reused(tiny_dataset, tmp_path):
    ids = list_image_ids(tiny_dataset["images"])
    settings = CropSettings(crop_size=24)
    cache = build_cache(
        tiny_dataset["images"], tiny_dataset["masks"], ids, settings, tmp_path, progress=False
    )
    assert len(cache) == len(ids) * (4 + settings.tiles_per_image)
    assert cache.views.shape == (len(cache), 24, 24, 4) and cache.views.dtype == np.uint8
    assert set(cache.index["kind"]) == {"cell", "tile"}
    # rows equal what load_views cuts directly
    first = load_views(tiny_dataset["images"], tiny_dataset["masks"], ids[0], settings)
    assert np.array_equal(cache.views[:4], first.crops)
    assert np.array_equal(cache.views[4:9], first.tiles)
    again = build_cache(
        tiny_dataset["images"], tiny_dataset["masks"], ids, settings, tmp_path, progress=False
    )
    assert again.folder == cache.folder
    mean, std = channel_stats(cache, np.arange(len(cache)))
    assert mean.shape == (4,) and (std > 0).all()


def test_cache_rebuilt_when_settings_or_masks_change(tiny_dataset, tmp_path):
    ids = list_image_ids(tiny_dataset["images"])[:3]
    a = build_cache(
        tiny_dataset["images"],
        tiny_dataset["masks"],
        ids,
        CropSettings(crop_size=16),
        tmp_path,
        progress=False,
    )
    b = build_cache(
        tiny_dataset["images"],
        tiny_dataset["masks"],
        ids,
        CropSettings(crop_size=20),
        tmp_path,
        progress=False,
    )
    assert a.folder != b.folder
    scaled = build_cache(
        tiny_dataset["images"],
        tiny_dataset["masks"],
        ids,
        CropSettings(crop_size=16, image_scale=True),
        tmp_path,
        progress=False,
    )
    assert scaled.folder not in (a.folder, b.folder)
    mask = tiny_dataset["masks"] / "cells" / f"{ids[0]}.png"
    st = mask.stat()
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        c = build_cache(
            tiny_dataset["images"],
            tiny_dataset["masks"],
            ids,
            CropSettings(crop_size=16),
            tmp_path,
            progress=False,
        )
        assert c.folder != a.folder
    finally:
        os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_settings_without_image_scale_hash_as_before_it_existed(tiny_dataset, monkeypatch):
    """Caches cut before ``CropSettings.image_scale`` existed hold the same views: same key."""
    import dataclasses

    import hpa.classification.cache as cache_module

    ids = list_image_ids(tiny_dataset["images"])[:3]
    args = (tiny_dataset["images"], tiny_dataset["masks"], ids)
    now = cache_key(*args, CropSettings(crop_size=16))
    scaled = cache_key(*args, CropSettings(crop_size=16, image_scale=True))

    def without_field(settings):  # the settings as the dataclass was before the field
        return {k: v for k, v in dataclasses.asdict(settings).items() if k != "image_scale"}

    monkeypatch.setattr(cache_module, "asdict", without_field)
    assert cache_key(*args, CropSettings(crop_size=16)) == now != scaled


def test_unreadable_image_is_reported_not_fatal(tiny_dataset, tmp_path):
    ids = [*list_image_ids(tiny_dataset["images"])[:2], "absent"]
    cache = build_cache(
        tiny_dataset["images"],
        tiny_dataset["masks"],
        ids,
        CropSettings(crop_size=16),
        tmp_path,
        progress=False,
    )
    assert list(cache.failures) == ["absent"] and "missing" in cache.failures["absent"]
    assert set(cache.index["image_id"]) == set(ids[:2])


def test_interrupted_builds_leave_no_temporary_folder(tiny_dataset, tmp_path, monkeypatch):
    import subprocess
    import sys

    import pytest

    import hpa.classification.cache as cache_mod

    ids = list_image_ids(tiny_dataset["images"])
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = (
        tmp_path / f".hpa-tmp-{int(dead.stdout)}-0123abcd-abc"
    )  # left by a killed build (its process is gone)
    stale.mkdir()
    live = tmp_path / f".hpa-tmp-{os.getpid()}-0123abcd-abc"  # a build in progress: kept
    live.mkdir()

    def broken(*args, **kwargs):
        yield from ()
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "iter_views", broken)
    with pytest.raises(KeyboardInterrupt):
        build_cache(tiny_dataset["images"], tiny_dataset["masks"], ids, CropSettings(crop_size=8), tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [live.name], left
