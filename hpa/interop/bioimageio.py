"""``hpa export-model MODEL_DIR --to bioimageio --out DIR``: a model for the bioimage.io Model Zoo.

The export is one cell-crop classifier as a bioimage.io model resource (format 0.5),
written and validated with ``bioimageio.spec`` (the optional ``bioimageio`` extra), so
deepImageJ (Fiji), ilastik, QuPath's and napari's bioimage.io plugins run it:

* **input** ``views``: ``(batch, channel, y, x)`` float32, the four stains (red, green,
  blue, yellow) of a view (a cell crop or a tile, as hpa cuts them) at the network's
  input side, in the image's own intensity units (0-255 for 8-bit images);
* **preprocessing**, what the zoo's steps can say of hpa's intensity scaling
  (:func:`hpa.classification.model.unit_views`): ``scale_linear`` by ``1 / 255`` (the
  dtype's maximum) for ``dataset`` and ``image`` models; for ``view`` models also
  ``scale_range`` to the view's own 99.5th percentile of each channel (plus 1/255) and
  ``clip`` to [0, 1]. Where this differs from hpa is in :data:`DIFFERENCES`;
* **network**: hpa's channel mix and normalisation, the timm network and a sigmoid;
  weights as TorchScript and ONNX;
* **output** ``probabilities``: ``(batch, class)``, one probability per class;
* test tensors: cells of a real HPA sample shipped in ``data/hpa-samples`` (with its
  reference cell mask), cut by hpa's own crop code; the output is the exported model's;
* a cover (the sample with its cells outlined in the colour of their top class), the
  model card as documentation, and the member's ``thresholds.json`` and ``config.json``
  (class names, thresholds, cell-to-image pooling) as attachments.

A blend folder or a ``--folds`` folder is several networks: the export is one of them
(:func:`resolve_member`), the main member by default, and says which; ``--member all``
(:func:`export_members`) exports each network as its own resource, ``OUT/<member>/``,
and lists them in ``OUT/members.json``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpa.artefacts.modeldir import ModelDir
from hpa.artefacts.provenance import RECORD_FILE, Provenance, folder_fingerprint, write_record
from hpa.errors import HPAConfigError
from hpa.io import write_text_atomic

log = logging.getLogger(__name__)

#: The export formats of ``hpa export-model``.
FORMATS = ("bioimageio",)
#: The marker of a folder ``hpa export-model`` wrote (it replaces only such a folder).
MARKER = ".hpa-export-model"
RDF = "rdf.yaml"
ONNX = "weights.onnx"
TORCHSCRIPT = "weights.torchscript.pt"
TEST_INPUT = "test_input.npy"
TEST_OUTPUT = "test_output.npy"
COVER = "cover.png"
DOCUMENTATION = "README.md"
THRESHOLDS = ModelDir.THRESHOLDS
HPA_CONFIG = "hpa_config.json"
#: The packaged resource (``--zip``): the same files in one zip, as the zoo takes an upload.
PACKAGE = "bioimageio-package.zip"
#: The index of a ``--member all`` export: which member went to which folder.
INDEX = "members.json"
#: Every entry of an export folder (:func:`hpa.outputs.check_replaceable`); a ``--member
#: all`` export also holds the members' top folders (:func:`_known`).
ENTRIES = (
    RDF, ONNX, TORCHSCRIPT, TEST_INPUT, TEST_OUTPUT, COVER, DOCUMENTATION, THRESHOLDS, HPA_CONFIG,
    RECORD_FILE, PACKAGE, INDEX,
)  # fmt: skip
#: ``--member`` value that exports every network of the folder.
ALL = "all"
INPUT_ID, OUTPUT_ID = "views", "probabilities"
#: The ONNX opset the export is written with (onnxruntime runs 7 to 21).
OPSET = 17
#: The real sample the test tensors and the cover are cut from (shipped in data/).
SAMPLES = Path(__file__).resolve().parents[2] / "data" / "hpa-samples"
SAMPLE_ID = "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"
#: Cells of the sample in the test tensors.
TEST_CELLS = 2
#: The project's licence (pyproject.toml), given to the exported model.
LICENSE = "MIT"
#: The competitions whose data and label sets the models learn, by label set.
CITATIONS = {
    "2018": (
        "Ouyang W. et al. Analysis of the Human Protein Atlas Image Classification competition. "
        "Nature Methods 16, 1254-1261 (2019); data: Kaggle 'Human Protein Atlas Image Classification' (2018).",
        "10.1038/s41592-019-0658-6",
    ),
    "2021": (
        "Le T. et al. Analysis of the Human Protein Atlas Weakly Supervised Single-Cell Classification "
        "competition. Nature Methods 19, 1221-1229 (2022); data: Kaggle 'Human Protein Atlas - Single Cell "
        "Classification' (2021).",
        "10.1038/s41592-022-01606-z",
    ),
}
#: Where the export differs from hpa's own scoring, by intensity mode (also in docs/bioimageio.md).
DIFFERENCES = {
    "dataset": "none: the description's scale_linear divides by the dtype's maximum, as hpa does.",
    "view": (
        "none where the network's input size is at least the crop size: the view's percentiles are taken "
        "inside the exported network at the crop size, as in hpa. A model with an input size below the "
        "crop size takes views already resized, and their percentiles after the resize."
    ),
    "image": (
        "hpa stretches each channel of the whole image to its 99.5th percentile before cutting the views; "
        "a per-view model cannot: give views cut from images stretched that way."
    ),
}


def require_bioimageio() -> None:
    """Import ``bioimageio.spec``, ``bioimageio.core``, ``onnx`` (the ONNX exporter needs it) and ``onnxruntime``, or say how to install them.

    Raises:
        HPAConfigError: one is missing; the message names it and the extra to install.
    """
    import importlib

    for name in ("bioimageio.spec", "bioimageio.core", "onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise HPAConfigError(
                f"hpa export-model --to bioimageio needs {name} ({exc}); install the extra: "
                "pip install 'hpa-cells[bioimageio]'"
            ) from None


# ------------------------------------------------------------- which network ---


@dataclass(frozen=True)
class Member:
    """The plain model folder an export is made from.

    Attributes:
        folder: the plain model folder (``config.json``, ``weights.safetensors``).
        name: its path inside MODEL_DIR (``"."`` for a plain folder, ``"main/fold-0"``).
        kind: what MODEL_DIR is: ``"model"``, ``"model-folds"`` or ``"blend"``.
        description: one sentence saying which network of MODEL_DIR this is.
    """

    folder: Path
    name: str
    kind: str
    description: str


def _members(folder: Path) -> list[str] | None:
    from hpa.classification.ensemble import read_ensemble

    spec = read_ensemble(folder)
    return None if spec is None else [str(m) for m in spec["members"]]


def plain_members(model_dir: str | Path) -> list[str]:
    """Every plain model folder inside a model folder, as paths relative to it (``"."`` for itself)."""
    root = Path(model_dir)

    def walk(rel: Path) -> list[str]:
        inner = _members(root / rel)
        if inner is None:
            return [rel.as_posix()]
        return [name for m in inner for name in walk(rel / m)]

    return walk(Path("."))


def is_network(folder: Path) -> bool:
    """Whether a plain member is a network (``config.json``), not the ``features``
    companion of a blend (a feature head, ``feature_head.json``: no network to export)."""
    return (folder / ModelDir.CONFIG).is_file()


def _known(model_dir: Path) -> list[str]:
    """The entries an export folder of ``model_dir`` may hold: one resource's, or the
    members' top folders and :data:`INDEX` of a ``--member all`` export (either replaces
    the other)."""
    tops = {Path(name).parts[0] for name in plain_members(model_dir) if name != "."}
    return [*ENTRIES, *sorted(tops)]


def resolve_member(model_dir: str | Path, member: str | None = None) -> Member:
    """The plain model folder to export from ``model_dir``.

    A plain folder is itself. A blend folder (``ensemble.json`` with ``"combine":
    "image"``) gives its main member (``main``, else its first), a ``--folds`` folder its
    first fold; a member that is itself a ``--folds`` folder gives its first fold.
    ``member`` names another, by its path inside ``model_dir`` (``"fold-2"``,
    ``"scratch"``, ``"main/fold-1"``).

    Raises:
        HPAConfigError: ``model_dir`` is not a model folder, or ``member`` is not one of
            its members (the message lists them).
    """
    from hpa.classification.ensemble import BLEND, MAIN, read_ensemble

    root = Path(model_dir)
    if not root.is_dir():
        raise HPAConfigError(f"{model_dir}: not found (expected a model folder of hpa train-cells)")
    if not (root / ModelDir.CONFIG).is_file() and not (root / ModelDir.ENSEMBLE).is_file():
        raise HPAConfigError(
            f"{model_dir}: not a model folder (no {ModelDir.CONFIG} or {ModelDir.ENSEMBLE}); "
            "give a folder written by hpa train-cells"
        )
    spec = read_ensemble(root)
    kind = "model" if spec is None else ("blend" if spec.get("combine") == BLEND else "model-folds")
    every = plain_members(root)
    if member is not None:
        name = Path(member).as_posix().strip("/") or "."
        if name not in every:
            inner = _members(root / name) if (root / name).is_dir() and name != "." else None
            if inner is None:
                raise HPAConfigError(
                    f"--member {member}: not a model of {model_dir}; its models are {', '.join(every)}"
                )
            name = (Path(name) / inner[0]).as_posix()
            while name not in every:  # a --folds member of a blend: its first fold
                name = (Path(name) / (_members(root / name) or [""])[0]).as_posix()
        if not is_network(root / name):
            raise HPAConfigError(
                f"--member {member}: a feature head ({ModelDir.FEATURE_HEAD}), not a network; "
                f"bioimage.io models are networks: choose one of "
                f"{', '.join(m for m in every if is_network(root / m))}"
            )
        chosen = "chosen with --member"
    else:
        name = "."
        if spec is not None:
            first = MAIN if kind == "blend" and MAIN in spec["members"] else spec["members"][0]
            name = first
            while name not in every:
                name = (Path(name) / (_members(root / name) or [""])[0]).as_posix()
        chosen = "the default"
    if kind == "model":
        description = f"the model folder {root.resolve().name}"
    else:
        what = "a blend of a model and its companion" if kind == "blend" else "a --folds ensemble"
        description = (
            f"the member {name} ({chosen}) of {root.resolve().name}, {what} of {len(every)} networks "
            f"({', '.join(every)}); hpa predict combines them all, this export is that one network"
        )
    return Member(root / name, name, kind, description)


# ------------------------------------------------------------- the network ---


class ViewClassifier(nn.Module):
    """One view's stains in [0, 1] to class probabilities, as hpa scores it.

    Input ``(B, 4, S, S)``: the four stains divided by the dtype's maximum, at the side of
    :func:`input_side`. The module does the rest of
    :func:`hpa.classification.model.normalise`: under ``view`` intensity each channel is
    divided by its own 99.5th percentile plus 1/255 and clipped (the zoo's
    ``scale_range`` cannot say this: it maps the view's minimum to 0, takes the
    percentiles of the raw input and caps ``eps`` at 0.1), then the channel mix and the
    normalisation, the resize to the network's side (``size``, when the network upsamples
    the crops), the network and a sigmoid. Output ``(B, K)`` probabilities.
    """

    mix: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        mix: np.ndarray,
        mean: Sequence[float],
        std: Sequence[float],
        intensity: str,
        size: int | None = None,
    ):
        super().__init__()
        self.net = net
        self.per_view = intensity == "view"
        self.size = size
        self.register_buffer("mix", torch.from_numpy(np.asarray(mix, np.float32)))
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_view:
            x = (x / (bright_end(x) + 1.0 / 255.0)).clamp(0.0, 1.0)
        x = torch.einsum("oc,bchw->bohw", self.mix, x)
        x = (x - self.mean) / self.std
        if self.size is not None:  # upsampling: bilinear equals hpa's antialiased resize (to ~2e-6)
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.net(x))


def bright_end(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, 1, 1)``: each channel's :data:`~hpa.classification.model.VIEW_QUANTILE` quantile.

    ``torch.quantile``'s linear interpolation written with a sort, which both exporters
    trace (the ONNX exporter has no quantile).

    >>> v = torch.arange(1000.0).view(1, 1, 20, 50)
    >>> bool(torch.allclose(bright_end(v).flatten(), torch.quantile(v.flatten(), 0.995)))
    True
    """
    from hpa.classification.model import VIEW_QUANTILE

    flat = torch.sort(x.flatten(2), dim=2).values
    pos = VIEW_QUANTILE * (flat.shape[2] - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, flat.shape[2] - 1)
    top = flat[..., lo] + (pos - lo) * (flat[..., hi] - flat[..., lo])
    return top[..., None, None]


def view_classifier(folder: str | Path) -> tuple[ViewClassifier, Any]:
    """The :class:`ViewClassifier` of a plain model folder (fp32, CPU, eval) and its config."""
    from hpa.classification.channels import channel_matrix
    from hpa.classification.model import load_model

    net, cfg = load_model(folder)
    net = net.to(memory_format=torch.contiguous_format).float()
    mix = channel_matrix(cfg.channels)
    size = cfg.network_size if input_side(cfg) != cfg.network_size else None
    return ViewClassifier(net, mix, cfg.mean, cfg.std, cfg.intensity, size).eval(), cfg


def input_side(cfg: Any) -> int:
    """The side of the export's input views: the crop size where the network upsamples the
    crops (the resize is then inside the exported network, after the intensity scaling, as
    in hpa), else the network's input side (the user resizes).

    >>> from hpa.classification.model import ModelConfig
    >>> from hpa.constants import LABEL_SETS
    >>> cfg = ModelConfig("x", LABEL_SETS["2018"], "2018", input_size=224)
    >>> input_side(cfg), input_side(ModelConfig("x", LABEL_SETS["2018"], "2018", input_size=32))
    (64, 32)
    """
    return min(cfg.crop.crop_size, cfg.network_size)


def preprocessing(scale: float) -> list[Any]:
    """The zoo's preprocessing: float32, divided by the dtype's maximum ``scale``."""
    from bioimageio.spec.model import v0_5

    return [v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=1.0 / scale, offset=0.0))]


# ------------------------------------------------------- the sample views ---


def sample_views(cfg: Any, n: int | None = TEST_CELLS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells of the shipped real sample, cut as hpa cuts them, at the export's input side.

    Returns:
        ``(views, image, cells)``: ``(n, 4, S, S)`` float32 views in the image's units
        (``S`` = :func:`input_side`; every cell when ``n`` is None), the
        ``(H, W, 4)`` sample and its ``(H, W)`` reference cell mask.

    Raises:
        HPAConfigError: the shipped sample is not there (an installed hpa without data/).
    """
    from hpa.classification.cache import image_views
    from hpa.classification.model import resize_views
    from hpa.io import read_label_image, read_sample

    mask = SAMPLES / "reference-masks" / f"{SAMPLE_ID}_cellmask.png"
    if not mask.is_file():
        raise HPAConfigError(
            f"{mask}: the shipped real sample is missing; the test tensors are cut from it "
            "(run from a checkout of hpa, which has data/hpa-samples)"
        )
    image = read_sample(SAMPLES / "images", SAMPLE_ID)
    cells = read_label_image(mask)
    crops = image_views(image, cells, SAMPLE_ID, cfg.crop).crops[:n]
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return resize_views(x, input_side(cfg)).numpy().astype(np.float32), image, cells


def _cover(
    path: Path, image: np.ndarray, cells: np.ndarray, probs: np.ndarray, cfg: Any, thresholds: Any
) -> None:
    """The sample and, beside it, its cells outlined in the colour of their top class (2:1)."""
    import cv2
    import pandas as pd

    from hpa.io import write_png
    from hpa.visualization.composite import composite
    from hpa.visualization.overlay import overlay_panel

    ids = np.unique(cells)
    ids = ids[ids > 0]
    table = pd.DataFrame(probs, columns=list(cfg.class_names)).assign(cell_id=ids)
    panel = overlay_panel(image, cells, table, cfg.class_names, thresholds, max_side=256, fill_alpha=0.25)
    plain = composite(image)
    plain = cv2.resize(plain, (panel.shape[1], panel.shape[0]), interpolation=cv2.INTER_AREA)
    write_png(path, np.concatenate([plain, panel], axis=1))


# ------------------------------------------------------------- the export ---


def _trace(model: nn.Module, x: torch.Tensor, folder: Path) -> None:
    """Write the TorchScript and ONNX weights of ``model`` (batch axis dynamic)."""
    with warnings.catch_warnings():
        # both exporters are deprecated in favour of torch.export, which onnx needs onnxscript for
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, x)
            traced.save(str(folder / TORCHSCRIPT))
            torch.onnx.export(
                model,
                (x,),
                str(folder / ONNX),
                dynamo=False,
                input_names=[INPUT_ID],
                output_names=[OUTPUT_ID],
                dynamic_axes={INPUT_ID: {0: "batch"}, OUTPUT_ID: {0: "batch"}},
                opset_version=OPSET,
            )


def _documentation(member: Member, cfg: Any, model_dir: Path, scale: float) -> str:
    """The export's README.md: what was exported and how to feed it, then the model card."""
    card = next((p for p in (member.folder / ModelDir.CARD, model_dir / ModelDir.CARD) if p.is_file()), None)
    size, side = cfg.network_size, input_side(cfg)
    inside = f" (the network resizes them to {size} px)" if side != size else ""
    lines = [
        f"# {model_dir.resolve().name}: an hpa cell-crop classifier (bioimage.io export)",
        "",
        f"Exported by `hpa export-model`: {member.description}.",
        "",
        "## Input and output",
        "",
        f"- input `{INPUT_ID}`: `(batch, channel, y, x)`, the four stains red (microtubules), green "
        f"(protein of interest), blue (nucleus), yellow (ER) of one cell crop or tile at {side}x{side} px"
        f"{inside}, in the image's own units (0-{scale:g}).",
        f"- views as hpa cuts them: the square around a cell's box widened by {cfg.crop.margin:g} of its "
        f"side on each side (window: {cfg.crop.scale}), "
        + ("pixels outside the cell blanked, " if cfg.crop.mask_outside else "")
        + f"resized to {cfg.crop.crop_size} px"
        + (f", then to {side} px." if side != cfg.crop.crop_size else "."),
        f"- intensity: `{cfg.intensity}`; difference from hpa's own scoring: {DIFFERENCES[cfg.intensity]}",
        f"- output `{OUTPUT_ID}`: `(batch, class)`, the probability of each of the {cfg.num_classes} "
        f"classes of the {cfg.label_set} label set.",
        f"- `{THRESHOLDS}`: the per-class thresholds a cell is called with; `{HPA_CONFIG}`: the model's "
        f"settings, among them the cell-to-image pooling (`{cfg.pooling}`) and tile weight "
        f"({cfg.tile_weight:g}) hpa uses for image labels.",
        "",
    ]
    text = "\n".join(lines)
    if card is not None:
        text += "\n## Model card\n\n" + card.read_text(encoding="utf-8").replace("\n# ", "\n### ")
    return text


def export_bioimageio(
    model_dir: str | Path,
    out: str | Path,
    *,
    member: str | None = None,
    authors: Sequence[str] = (),
    scale: float = 255.0,
    test: bool = True,
    package: bool = False,
) -> Path:
    """Export one network of ``model_dir`` as a bioimage.io model folder ``out``.

    ``out`` is built beside itself and swapped in whole (:class:`hpa.outputs.StagedFolder`):
    an existing ``out`` is replaced only when ``hpa export-model`` wrote it.

    Args:
        model_dir: a model folder of ``hpa train-cells`` (plain, ``--folds`` or blend).
        out: the resource folder to write (``rdf.yaml`` and its files).
        member: which network of a blend or ``--folds`` folder (:func:`resolve_member`).
        authors: the authors named in the resource (default: hpa's users).
        scale: the maximum of the images' dtype (255 for 8-bit, 65535 for 16-bit images).
        test: run ``bioimageio.core``'s model test on the written folder.
        package: also write ``out/bioimageio-package.zip`` (``save_bioimageio_package``).

    Returns:
        The path of ``out/rdf.yaml``.

    Raises:
        HPAConfigError: not a model folder, an unknown member, the extra not installed,
            ``out`` not hpa's, or the written resource failing validation or its test.
    """
    from hpa.aggregation import load_thresholds
    from hpa.outputs import StagedFolder, check_apart

    require_bioimageio()
    model_dir, out = Path(model_dir), Path(out)
    chosen = resolve_member(model_dir, member)
    check_apart(out, {"MODEL_DIR": model_dir})
    log.info("exporting %s", chosen.description)
    model, cfg = view_classifier(chosen.folder)
    thresholds, _ = load_thresholds(chosen.folder / ModelDir.THRESHOLDS)
    views, image, cells = sample_views(cfg, None)
    x = torch.from_numpy(views) / scale
    with torch.no_grad():
        probs = model(x).numpy()
    record = Provenance(
        "bioimageio",
        "hpa export-model",
        {"to": "bioimageio", "member": chosen.name, "scale": scale, "authors": list(authors)},
        {"model": (folder_fingerprint(model_dir),), "member": (folder_fingerprint(chosen.folder),)},
    )
    with StagedFolder(out, MARKER, _known(model_dir), "hpa export-model") as stage:
        folder = stage.path
        _trace(model, x[:TEST_CELLS], folder)
        np.save(folder / TEST_INPUT, views[:TEST_CELLS])
        np.save(folder / TEST_OUTPUT, probs[:TEST_CELLS].astype(np.float32))
        _cover(folder / COVER, image, cells, probs, cfg, thresholds)
        shutil.copyfile(chosen.folder / ModelDir.THRESHOLDS, folder / THRESHOLDS)
        shutil.copyfile(chosen.folder / ModelDir.CONFIG, folder / HPA_CONFIG)
        write_text_atomic(folder / DOCUMENTATION, _documentation(chosen, cfg, model_dir, scale))
        write_record(folder, record)
        with zoo_calls():
            descr = _description(folder, chosen, cfg, model_dir, scale, authors)
            rdf = _save(descr, folder, test)
            if package:
                from bioimageio.spec import save_bioimageio_package

                save_bioimageio_package(rdf, output_path=folder / PACKAGE)
        stage.commit()
    log.info("bioimage.io model written: %s", out / rdf.name)
    return out / rdf.name


def export_members(model_dir: str | Path, out: str | Path, **options: Any) -> dict[str, Path]:
    """``--member all``: every network of ``model_dir`` as its own resource, ``out/<member>/``.

    Each member (:func:`plain_members`: ``main/fold-0``, ``scratch``, ...) is exported as
    :func:`export_bioimageio` exports it alone, into ``out/<member>`` (a nested folder for
    a fold of a blend member); a blend's ``features`` companion (a feature head, no
    network) is skipped and said so. ``out/members.json`` lists what went where. ``out``
    is built beside itself and swapped in whole, as a single export is.

    Args:
        model_dir: a model folder of ``hpa train-cells`` (a plain folder gives ``out/./``:
            use a plain export instead; it is refused here).
        out: the folder of resources to write.
        options: :func:`export_bioimageio`'s keyword arguments but ``member``.

    Returns:
        ``{member: path of its rdf.yaml}``, in :func:`plain_members` order.

    Raises:
        HPAConfigError: as :func:`export_bioimageio`, or ``model_dir`` is one network.
    """
    from hpa.outputs import StagedFolder, check_apart

    model_dir, out = Path(model_dir), Path(out)
    chosen = resolve_member(model_dir)  # checks it is a model folder
    if chosen.kind == "model":
        raise HPAConfigError(
            f"--member {ALL}: {model_dir} is one network, not a blend or --folds folder; leave out --member"
        )
    check_apart(out, {"MODEL_DIR": model_dir})
    every = plain_members(model_dir)
    networks = [m for m in every if is_network(model_dir / m)]
    skipped = {
        m: f"a feature head ({ModelDir.FEATURE_HEAD}), not a network" for m in every if m not in networks
    }
    for name, why in skipped.items():
        log.info("--member %s: %s skipped: %s", ALL, name, why)
    written: dict[str, Path] = {}
    with StagedFolder(out, MARKER, _known(model_dir), "hpa export-model") as stage:
        for k, name in enumerate(networks, 1):
            log.info("member %d of %d: %s -> %s", k, len(networks), name, out / name)
            export_bioimageio(model_dir, stage.path / name, member=name, **options)
            written[name] = out / name / RDF
        index = {
            "model": str(model_dir.resolve()),
            "kind": chosen.kind,
            "exported": {name: f"{name}/{RDF}" for name in networks},
            "skipped": skipped,
            "note": "hpa predict combines all members; each resource here is one network",
        }
        write_text_atomic(stage.path / INDEX, json.dumps(index, indent=2) + "\n")
        stage.commit()
    log.info("bioimage.io models written: %s", ", ".join(str(p) for p in written.values()))
    return written


def resource_name(model_dir: Path, member: str) -> str:
    """The resource's name: the model folder's (and member's) name in the characters the zoo allows.

    >>> resource_name(Path("runs/model.v2"), "main/fold-0")
    'HPA cell classifier model-v2 (main-fold-0)'
    """
    import re

    text = model_dir.resolve().name + (f" ({member})" if member != "." else "")
    return re.sub(r"[^A-Za-z0-9_+\- ()]", "-", f"HPA cell classifier {text}")[:64]


def _rel(name: str) -> Any:
    """A file of the resource, relative to its ``rdf.yaml`` (so the folder can move)."""
    from bioimageio.spec._internal.io import RelativeFilePath

    return RelativeFilePath(Path(name))


def _description(
    folder: Path, chosen: Member, cfg: Any, model_dir: Path, scale: float, authors: Sequence[str]
) -> Any:
    """The resource's :class:`bioimageio.spec.model.v0_5.ModelDescr` for the files in ``folder``."""
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5

    size = input_side(cfg)
    text, doi = CITATIONS[cfg.label_set]
    with ValidationContext(root=folder, perform_io_checks=True):
        inputs = [
            v0_5.InputTensorDescr(
                id=v0_5.TensorId(INPUT_ID),
                description=(
                    f"the four stains of one cell crop or tile at {size} px, in the image's units (0-{scale:g})"
                ),
                axes=[
                    v0_5.BatchAxis(),
                    v0_5.ChannelAxis(
                        channel_names=[v0_5.Identifier(c) for c in ("red", "green", "blue", "yellow")]
                    ),
                    v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size),
                    v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size),
                ],
                test_tensor=v0_5.FileDescr(source=_rel(TEST_INPUT)),
                data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, scale)),
                preprocessing=preprocessing(scale),
            )
        ]
        outputs = [
            v0_5.OutputTensorDescr(
                id=v0_5.TensorId(OUTPUT_ID),
                description="the probability of each class (a cell is called where it reaches thresholds.json's)",
                axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=list(cfg.class_names))],
                test_tensor=v0_5.FileDescr(source=_rel(TEST_OUTPUT)),
                data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            )
        ]
        return v0_5.ModelDescr(
            name=resource_name(model_dir, chosen.name),
            description=(
                f"Protein subcellular localisation of single cells in Human Protein Atlas immunofluorescence "
                f"images ({cfg.label_set} label set, {cfg.num_classes} classes), from a {cfg.backbone} "
                f"trained by hpa train-cells. Exported: {chosen.description}."
            )[:1024],
            authors=[v0_5.Author(name=a) for a in (authors or ["hpa-cells users"])],
            cite=[v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi))],
            license=v0_5.LicenseId(LICENSE),
            documentation=v0_5.FileDescr(source=_rel(DOCUMENTATION)),
            covers=[v0_5.FileDescr(source=_rel(COVER))],
            tags=[
                "cells",
                "classification",
                "fluorescence-light-microscopy",
                "human-protein-atlas",
                "2d",
                "pytorch",
            ],
            inputs=inputs,
            outputs=outputs,
            attachments=[v0_5.FileDescr(source=_rel(n)) for n in (THRESHOLDS, HPA_CONFIG, RECORD_FILE)],
            weights=v0_5.WeightsDescr(
                torchscript=v0_5.TorchscriptWeightsDescr(
                    source=_rel(TORCHSCRIPT), pytorch_version=v0_5.Version(torch.__version__.split("+")[0])
                ),
                onnx=v0_5.OnnxWeightsDescr(source=_rel(ONNX), opset_version=OPSET, parent="torchscript"),
            ),
        )


def _save(descr: Any, folder: Path, test: bool) -> Path:
    """Write ``rdf.yaml``, load it back as the zoo would, and run the model test."""
    from bioimageio.spec import InvalidDescr, load_description, save_bioimageio_yaml_only

    path = folder / RDF
    save_bioimageio_yaml_only(descr, path)
    loaded = load_description(path, format_version="latest")
    if isinstance(loaded, InvalidDescr):
        raise HPAConfigError(
            f"{path}: the written resource is not valid:\n{loaded.validation_summary.format()}"
        )
    if test:
        summary = run_model_test(path)
        if summary.status != "passed":
            raise HPAConfigError(f"{path}: bioimageio.core's model test failed:\n{summary.format()}")
    return path


def run_model_test(rdf: str | Path) -> Any:
    """``bioimageio.core.test_model`` on an export, offline; returns its validation summary."""
    from bioimageio.core import test_model

    with zoo_calls():
        return test_model(str(rdf))


@contextlib.contextmanager
def zoo_calls() -> Iterator[None]:
    """Around calls into bioimageio.spec and .core: their known warnings kept out of hpa's log.

    ``torch.jit.load`` (which the model test calls) is deprecated in torch 2.14, and
    bioimageio.spec leaves the files it hashes and unzips open until they are collected;
    they are collected here, while their ``ResourceWarning`` is ignored.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def main(args: Any) -> tuple[int, str]:
    """Handler of ``hpa export-model``."""
    if args.to not in FORMATS:
        raise HPAConfigError(f"--to {args.to!r}: expected one of {', '.join(FORMATS)}")
    options: dict[str, Any] = {
        "authors": args.author or (),
        "scale": float(2**args.bit_depth - 1),
        "test": not args.no_test,
        "package": args.zip,
    }
    if args.member == ALL:
        written = export_members(args.model, args.out, **options)
        listed = "; ".join(f"{name}: {rdf}" for name, rdf in written.items())
        return 0, f"{len(written)} bioimage.io models written, one per member ({listed})"
    rdf = export_bioimageio(args.model, args.out, member=args.member, **options)
    return 0, f"bioimage.io model written: {rdf}"
