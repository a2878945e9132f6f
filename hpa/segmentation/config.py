"""Settings of the segmentation stage: one frozen dataclass, every threshold and size.

Sizes are never given in pixels of the input image. They are fractions or multiples of
the nucleus diameter, which :func:`hpa.segmentation.watershed.estimate_nucleus_diameter`
measures on each image, so the same settings work at 512 px and at 3072 px.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("watershed", "cellpose")


@dataclass(frozen=True)
class SegmentConfig:
    """Every setting of :func:`hpa.segmentation.segment`.

    Attributes:
        backend: ``"watershed"`` (classical, no weights) or ``"cellpose"``.
        work_nucleus_diameter: the image is shrunk (never enlarged) so that a nucleus is
            about this many pixels across before segmenting; labels are mapped back to
            the input's resolution by nearest neighbour.
        scale_probe_side: the first pass that estimates the nucleus size runs on the
            image shrunk to at most this side.
        scale_probe_min_diameter: if the first pass finds nuclei smaller than this (in
            probe pixels) it is repeated at twice the resolution.
        min_nucleus_diameter: smallest nucleus diameter (input pixels) the estimate may return.
        default_nucleus_diameter: estimate used when an image shows no nucleus at all.
        max_nucleus_fraction: a first-pass estimate wider than this fraction of the
            image's shorter side is taken for a bed of many nuclei seen as one blob (an
            embryo), and the size is measured again after removing that bed.
        probe_background: width, in probe nucleus diameters
            (``scale_probe_min_diameter``), of the disc whose greyscale opening is
            subtracted in that second pass.
        nucleus_smooth: Gaussian sigma of the blue channel, in nucleus diameters.
        nucleus_background: the greyscale opening of the blue channel by a disc this many
            nucleus diameters wide (the glow that nuclei lie on) is subtracted before
            thresholding (a white top-hat); 0 turns it off.
        nucleus_log_offset: offset added before taking the log of the blue channel,
            as a fraction of its 99.9th percentile (thresholds on log intensity are
            robust to uneven brightness between nuclei).
        nucleus_local_block: side of the local (adaptive) threshold window, in nucleus
            diameters; 0 turns the local threshold off.
        nucleus_local_offset: the local threshold is the local mean plus this many
            (log) units.
        nucleus_split_h: h of the h-maxima of the distance transform that seed the
            splitting of touching nuclei, in nucleus diameters.
        nucleus_split_smooth: Gaussian sigma of that distance transform, in diameters.
        nucleus_split_cap: the distance transform is capped at this many diameters, so
            inside a clump the intensity (dark gaps between nuclei) decides the split.
        nucleus_split_intensity: exponent of the smoothed blue intensity (relative to
            its median in nuclei) that multiplies the capped distance; 0 = distance only.
        min_nucleus_area: nuclei smaller than this fraction of a typical nucleus's area
            (a disc of the estimated diameter) are dropped.
        cell_smooth: Gaussian sigma of the cytoplasm (red + yellow), in nucleus diameters.
        cell_threshold_scale: the cytoplasm foreground threshold is this factor times
            the Otsu threshold of the log cytoplasm intensity, measured above background.
            Where red and yellow carry no signal at all, a cell is every pixel within
            ``max_cell_radius`` of its nucleus. 0.5 (with ``max_cell_radius`` 2) is the
            setting kept by ``benchmarks/seg_defaults_bench.py``: 1.0x with reach 3 gave
            tighter boundaries on the four tuning images but lost cells (F1@0.5 and
            @0.6) on three unseen real images and won nothing beyond the spread at F1@0.6.
        cell_compactness: compactness of the seeded watershed of cells.
        max_cell_radius: a cell reaches at most this many nucleus diameters beyond its
            nucleus.
        min_cell_area: cells smaller than this fraction of a typical nucleus's area are
            dropped.
        keep_cells_without_nucleus: keep cells that have no nucleus (their nucleus mask
            is empty and ``nucleus_area`` is 0) instead of dropping them.
        cellpose_model: cellpose cytoplasm model name (e.g. ``cyto3``) or weights file.
        cellpose_nuclei_model: cellpose nuclei model name (e.g. ``nuclei``) or weights file.
        cellpose_device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        cellpose_diameter: cell diameter in input pixels given to cellpose; 0 estimates
            it as ``cellpose_cell_to_nucleus`` times the measured nucleus diameter.
        cellpose_cell_to_nucleus: ratio of cell to nucleus diameter for that estimate.
        cellpose_flow_threshold: cellpose's flow error threshold.
        cellpose_cellprob_threshold: cellpose's cell probability threshold.
        min_nucleus_overlap: a cellpose nucleus belongs to the cell covering at least
            this fraction of it.
    """

    backend: str = "watershed"
    # nucleus scale and working resolution
    work_nucleus_diameter: float = 32.0
    scale_probe_side: int = 512
    scale_probe_min_diameter: float = 12.0
    min_nucleus_diameter: float = 6.0
    default_nucleus_diameter: float = 30.0
    max_nucleus_fraction: float = 0.3
    probe_background: float = 2.0
    # nuclei
    nucleus_smooth: float = 0.04
    nucleus_log_offset: float = 1.0
    nucleus_background: float = 1.5
    nucleus_local_block: float = 0.0
    nucleus_local_offset: float = -0.3
    nucleus_split_h: float = 0.04
    nucleus_split_smooth: float = 0.05
    nucleus_split_cap: float = 0.5
    nucleus_split_intensity: float = 0.0
    min_nucleus_area: float = 0.15
    # cells
    cell_smooth: float = 0.08
    cell_threshold_scale: float = 0.5
    cell_compactness: float = 0.0
    max_cell_radius: float = 2.0
    min_cell_area: float = 0.5
    keep_cells_without_nucleus: bool = False
    # cellpose backend
    cellpose_model: str = "cyto3"
    cellpose_nuclei_model: str = "nuclei"
    cellpose_device: str = "auto"
    cellpose_diameter: float = 0.0
    cellpose_cell_to_nucleus: float = 2.5
    cellpose_flow_threshold: float = 0.4
    cellpose_cellprob_threshold: float = 0.0
    min_nucleus_overlap: float = 0.5

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown segmentation backend {self.backend!r}; choose from {BACKENDS}")
        if self.work_nucleus_diameter <= 0 or self.scale_probe_side < 64:
            raise ValueError("work_nucleus_diameter must be > 0 and scale_probe_side >= 64")
        if self.max_nucleus_fraction <= 0 or self.probe_background < 0 or self.nucleus_background < 0:
            raise ValueError("max_nucleus_fraction must be > 0, probe/nucleus_background >= 0")
