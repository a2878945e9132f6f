"""Cell and nucleus geometry of a synthetic HPA field of view.

Nuclei are seeded by dart throwing with a minimum spacing; every seed then grows a cell
territory by a noisy, anisotropic distance competition limited by a maximum radius (a
power-diagram-like tessellation with wobbly borders). Cells therefore touch, have
irregular outlines, leave gaps of background where they do not reach each other and are
cut by the image border. A cell and its nucleus share one id; the nucleus pixels are
forced into their cell, so every nucleus lies inside its cell.

Lengths are given at 512 px (the 2018 Kaggle scale) and multiplied by ``size / 512``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

INTERPHASE = "interphase"
MITOTIC = "mitotic"  # round cell with a condensed metaphase plate
DAUGHTER = "daughter"  # one of a dividing pair joined by a cytokinetic bridge


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth random field with features about ``cell`` pixels across.

    Args:
        rng: random generator.
        shape: ``(H, W)`` of the result.
        cell: feature size in pixels (> 1).

    Returns:
        ``(H, W)`` float32 field with zero mean and unit standard deviation.
    """
    h, w = shape
    gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    field_ = cv2.resize(coarse, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    field_ = field_[:h, :w]
    return (field_ - field_.mean()) / (field_.std() + 1e-6)


def bandpass_noise(
    rng: np.random.Generator, shape: tuple[int, int], fine: float, coarse: float
) -> np.ndarray:
    """White noise band-passed between two Gaussian scales (difference of Gaussians).

    Returns:
        ``(H, W)`` float32 field, zero mean and unit standard deviation.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    band = cv2.GaussianBlur(white, (0, 0), fine) - cv2.GaussianBlur(white, (0, 0), coarse)
    return (band - band.mean()) / (band.std() + 1e-6)


@dataclass(frozen=True)
class Cell:
    """Geometry of one cell; coordinates are ``(x, y)`` pixels.

    Attributes:
        id: label of the cell and its nucleus in the instance images.
        kind: ``"interphase"``, ``"mitotic"`` or ``"daughter"``.
        centre: centre of the cell territory.
        nucleus_centre: centre of the nucleus.
        nucleus_axes: semi-axes ``(a, b)`` of the nucleus ellipse.
        nucleus_angle: orientation of the nucleus ellipse, radians.
        radius: maximum reach of the cell from its centre.
        polarity: direction (radians) of the side of the nucleus with most cytoplasm,
            where the Golgi, the MTOC and the aggresome sit.
        partner: id of the sister cell of a dividing pair, 0 otherwise.
        nucleoli: ``(k, 3)`` float array of nucleolus ``(x, y, r)``.
        bbox: ``(y0, y1, x0, x1)`` of the cell in the image (end exclusive).
    """

    id: int
    kind: str
    centre: tuple[float, float]
    nucleus_centre: tuple[float, float]
    nucleus_axes: tuple[float, float]
    nucleus_angle: float
    radius: float
    polarity: float
    partner: int
    nucleoli: np.ndarray
    bbox: tuple[int, int, int, int]

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of :attr:`bbox`."""
        y0, y1, x0, x1 = self.bbox
        return slice(y0, y1), slice(x0, x1)

    @property
    def mtoc(self) -> tuple[float, float]:
        """The perinuclear microtubule organising centre, on the polarity side."""
        a = self.nucleus_axes[0]
        return (
            self.nucleus_centre[0] + 1.15 * a * np.cos(self.polarity),
            self.nucleus_centre[1] + 1.15 * a * np.sin(self.polarity),
        )


@dataclass(frozen=True)
class Layout:
    """Geometry of a whole image: instance masks and maps the drawing code shares.

    Attributes:
        size: image side in pixels.
        scale: ``size / 512``.
        cells: ``(H, W)`` int32 cell instance labels, 0 = background.
        nuclei: ``(H, W)`` int32 nucleus labels, same ids as ``cells``.
        nucleoli: ``(H, W)`` float32 soft nucleolus map in [0, 1].
        rho: ``(H, W)`` float32 radial position in the cytoplasm: 0 at the nucleus
            outline, 1 at the cell outline, 0 inside nuclei and in the background.
        junction: ``(H, W)`` bool, cell pixels touching another cell.
        free_edge: ``(H, W)`` bool, cell pixels touching the background or the border.
        cell_list: the cells, in id order.
    """

    size: int
    scale: float
    cells: np.ndarray
    nuclei: np.ndarray
    nucleoli: np.ndarray
    rho: np.ndarray
    junction: np.ndarray
    free_edge: np.ndarray
    cell_list: tuple[Cell, ...] = field(default_factory=tuple)

    def cell(self, cell_id: int) -> Cell:
        """The cell with this id."""
        return self.cell_list[cell_id - 1]


@dataclass
class _Site:
    kind: str
    nucleus_centre: np.ndarray
    axes: tuple[float, float]
    nucleus_angle: float
    centre: np.ndarray
    radius: float
    elongation: float
    cell_angle: float
    polarity: float
    harmonics: np.ndarray  # (k, 2): amplitude, phase for k = 2, 3, ...
    partner: int = -1  # index of the sister site


def _seed_nuclei(rng: np.random.Generator, size: int, spacing: float, n_max: int) -> np.ndarray:
    """Dart throwing: up to ``n_max`` points at least ``spacing`` apart. Returns ``(n, 2)``."""
    pts = np.empty((0, 2))
    for p in rng.uniform(0.02 * size, 0.98 * size, (n_max * 40, 2)):
        if len(pts) >= n_max:
            break
        if len(pts) and np.min(np.sum((pts - p) ** 2, axis=1)) < spacing**2:
            continue
        pts = np.vstack([pts, p])
    return pts


def _interphase_site(rng: np.random.Generator, p: np.ndarray, s: float, spacing: float) -> _Site:
    r_n = min(rng.uniform(20.0, 31.0) * s, 0.44 * spacing)
    aspect = rng.uniform(1.0, 1.4)
    theta = rng.uniform(0, np.pi)
    radius = float(np.clip(r_n * rng.uniform(2.0, 3.0), 42 * s, 85 * s))
    cell_angle = theta + rng.normal(0, 0.3)
    polarity = cell_angle + rng.choice([0.0, np.pi]) + rng.normal(0, 0.5)
    offset = rng.uniform(0.1, 0.3) * radius
    centre = p + offset * np.array([np.cos(polarity), np.sin(polarity)])
    k = np.arange(2, 6)
    harm = np.stack([rng.uniform(0, 0.14, k.size) / np.sqrt(k - 1), rng.uniform(0, 2 * np.pi, k.size)], 1)
    return _Site(
        INTERPHASE, p, (r_n * np.sqrt(aspect), r_n / np.sqrt(aspect)), theta, centre, radius,
        rng.uniform(1.0, 1.8), cell_angle, polarity, harm,
    )  # fmt: skip


def _round_site(rng: np.random.Generator, kind: str, centre: np.ndarray, radius: float, s: float) -> _Site:
    harm = np.stack([rng.uniform(0, 0.03, 2), rng.uniform(0, 2 * np.pi, 2)], 1)
    if kind == MITOTIC:  # metaphase plate: a short, thin, bright bar of chromatin
        axes, nuc = (rng.uniform(15, 19) * s, rng.uniform(4.5, 6.5) * s), centre
    else:
        r = rng.uniform(10.0, 13.0) * s
        axes, nuc = (r * 1.1, r / 1.1), centre
    angle = rng.uniform(0, np.pi)
    return _Site(kind, nuc, axes, angle, centre, radius, 1.05, angle, rng.uniform(0, 2 * np.pi), harm)


def _polar_radius(theta: np.ndarray, harmonics: np.ndarray) -> np.ndarray:
    """``1 + sum_k a_k cos(k theta + phi_k)`` for ``theta`` in [0, 2 pi], by table look-up."""
    grid = np.linspace(0, 2 * np.pi, 513, dtype=np.float32)
    table = np.ones_like(grid)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        table += amp * np.cos(k * grid + phase)
    return table[(theta * (512 / (2 * np.pi))).astype(np.int32)]


def _ellipse_distance(
    xx: np.ndarray, yy: np.ndarray, centre: np.ndarray, axes: tuple[float, float], angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised elliptical distance (1 on the outline) and polar angle of each pixel."""
    dx, dy = xx - np.float32(centre[0]), yy - np.float32(centre[1])
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (dx * c + dy * s) * np.float32(1 / axes[0])
    v = (dy * c - dx * s) * np.float32(1 / axes[1])
    mag, ang = cv2.cartToPolar(u, v)
    return mag, ang


def make_layout(
    rng: np.random.Generator, size: int = 512, mitosis: bool = False, division: bool = False
) -> Layout:
    """Draw the cells and nuclei of one image.

    Args:
        rng: random generator (the only source of randomness).
        size: image side in pixels; lengths scale with ``size / 512``.
        mitosis: force a round mitotic cell (otherwise present in about 30% of images).
        division: force a dividing pair of daughter cells (otherwise in about 30%).

    Returns:
        The :class:`Layout`; ``cells`` and ``nuclei`` are ``(size, size)`` int32.
    """
    s = size / 512.0
    spacing = rng.uniform(68.0, 105.0) * s
    has_mitosis = bool(rng.random() < 0.3) or mitosis
    has_division = bool(rng.random() < 0.3) or division
    pts = _seed_nuclei(rng, size, spacing, int(rng.integers(6, 40)))
    sites = [_interphase_site(rng, p, s, spacing) for p in pts]
    # The most central sites become the mitotic cell and the dividing pair.
    order = list(np.argsort(np.abs(pts - size / 2).max(axis=1)))
    if has_mitosis and len(order) > 1:
        i = order.pop(0)
        sites[i] = _round_site(rng, MITOTIC, pts[i], rng.uniform(30.0, 38.0) * s, s)
    if has_division and order:
        i = order.pop(0)
        psi = rng.uniform(0, np.pi)
        rd = rng.uniform(25.0, 31.0) * s
        u = np.array([np.cos(psi), np.sin(psi)])
        a = _round_site(rng, DAUGHTER, pts[i] - 1.0 * rd * u, rd, s)
        b = _round_site(rng, DAUGHTER, pts[i] + 1.0 * rd * u, rd, s)
        a.nucleus_centre, b.nucleus_centre = a.centre - 0.3 * rd * u, b.centre + 0.3 * rd * u
        a.polarity, b.polarity = psi, psi + np.pi
        sites[i] = a
        sites.append(b)
        a.partner, b.partner = len(sites) - 1, i
    return _rasterise(rng, sites, size, s)


def _rasterise(rng: np.random.Generator, sites: list[_Site], size: int, s: float) -> Layout:
    pad = size // 2
    noise = smooth_noise(rng, (size + pad, size + pad), 22 * s)
    best = np.full((size, size), np.inf, np.float32)
    cells = np.zeros((size, size), np.int32)
    nuc_masks: list[tuple[tuple[slice, slice], np.ndarray]] = []
    for idx, st in enumerate(sites, start=1):
        reach = st.radius * np.sqrt(st.elongation) * 1.5 + 4
        y0, y1 = int(max(0, st.centre[1] - reach)), int(min(size, st.centre[1] + reach + 1))
        x0, x1 = int(max(0, st.centre[0] - reach)), int(min(size, st.centre[0] + reach + 1))
        if y1 <= y0 or x1 <= x0:
            nuc_masks.append(((slice(0, 0), slice(0, 0)), np.zeros((0, 0), bool)))
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        e = np.sqrt(st.elongation)
        d, th = _ellipse_distance(xx, yy, st.centre, (st.radius * e, st.radius / e), st.cell_angle)
        oy, ox = rng.integers(0, pad, 2)
        score = d / _polar_radius(th, st.harmonics) + 0.09 * noise[oy + y0 : oy + y1, ox + x0 : ox + x1]
        dn, thn = _ellipse_distance(xx, yy, st.nucleus_centre, st.axes, st.nucleus_angle)
        nmask = dn < 1.0 + 0.05 * np.cos(3 * thn + idx).astype(np.float32)
        score[nmask] = -1.0
        sl = (slice(y0, y1), slice(x0, x1))
        win = score < best[sl]
        best[sl][win] = score[win]
        cells[sl][win] = idx
        nuc_masks.append((sl, nmask))
    cells[best >= 1.0] = 0
    nuclei = np.zeros_like(cells)
    for idx, (sl, nmask) in enumerate(nuc_masks, start=1):
        if nmask.size:
            own = cells[sl] == idx
            lab, n = ndimage.label(own)
            if n > 1:  # keep only the piece of the territory that holds the nucleus
                keep = np.unique(lab[nmask & own])
                cells[sl][own & ~np.isin(lab, keep[keep > 0])] = 0
            nuclei[sl][nmask & (cells[sl] == idx)] = idx
    return _finish(rng, sites, cells, nuclei, size, s)


def _finish(
    rng: np.random.Generator, sites: list[_Site], cells: np.ndarray, nuclei: np.ndarray, size: int, s: float
) -> Layout:
    """Drop cells without a nucleus, relabel 1..n and derive the shared maps."""
    present = np.unique(nuclei[nuclei > 0])
    lut = np.zeros(len(sites) + 1, np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    cells, nuclei = lut[cells], lut[nuclei]
    boxes = ndimage.find_objects(cells)
    nucleoli = np.zeros((size, size), np.float32)
    cell_list = []
    for new_id, old in enumerate(present, start=1):
        st = sites[old - 1]
        blobs = np.zeros((0, 3))
        if st.kind == INTERPHASE:
            k = int(rng.integers(1, 5))
            rr, ang = rng.uniform(0, 0.55, k), rng.uniform(0, 2 * np.pi, k)
            u, v = rr * np.cos(ang) * st.axes[0], rr * np.sin(ang) * st.axes[1]
            c, sn = np.cos(st.nucleus_angle), np.sin(st.nucleus_angle)
            x = st.nucleus_centre[0] + u * c - v * sn
            y = st.nucleus_centre[1] + u * sn + v * c
            blobs = np.stack([x, y, rng.uniform(2.5, 5.5, k) * s], 1)
            for bx, by, br in blobs:  # a main body and a smaller lobe: irregular nucleoli
                cv2.circle(nucleoli, (round(bx), round(by)), max(1, round(br)), 1.0, -1)
                lx, ly = bx + 0.6 * br * np.cos(ang[0]), by + 0.6 * br * np.sin(ang[0])
                cv2.circle(nucleoli, (round(lx), round(ly)), max(1, round(0.7 * br)), 1.0, -1)
        partner = 0 if st.partner < 0 else int(lut[st.partner + 1])
        sl = boxes[new_id - 1]
        assert sl is not None
        cell_list.append(
            Cell(
                id=new_id, kind=st.kind, centre=(float(st.centre[0]), float(st.centre[1])),
                nucleus_centre=(float(st.nucleus_centre[0]), float(st.nucleus_centre[1])),
                nucleus_axes=(float(st.axes[0]), float(st.axes[1])), nucleus_angle=float(st.nucleus_angle),
                radius=float(st.radius), polarity=float(st.polarity), partner=partner, nucleoli=blobs,
                bbox=(sl[0].start, sl[0].stop, sl[1].start, sl[1].stop),
            )
        )  # fmt: skip
    nucleoli = cv2.GaussianBlur(nucleoli, (0, 0), 0.8 * s) * (nuclei > 0)
    # 3x3 neighbourhood extremes of the labels (uint16 for OpenCV's fast morphology).
    lab16 = cells.astype(np.uint16)
    kernel = np.ones((3, 3), np.uint8)
    mx = cv2.dilate(lab16, kernel, borderType=cv2.BORDER_REPLICATE)
    mn = cv2.erode(lab16, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    mn_cells = cv2.erode(
        np.where(lab16 == 0, np.uint16(65535), lab16), kernel, borderType=cv2.BORDER_REPLICATE
    )
    inside = cells > 0
    junction = inside & ((mx > lab16) | (mn_cells < lab16))
    free_edge = inside & (mn == 0)
    d_edge = cv2.distanceTransform((inside & ~junction & ~free_edge).astype(np.uint8), cv2.DIST_L2, 3)
    d_nuc = cv2.distanceTransform((nuclei == 0).astype(np.uint8), cv2.DIST_L2, 3)
    cyto = inside & (nuclei == 0)
    rho = np.where(cyto, d_nuc / (d_nuc + d_edge + 1e-3), 0.0).astype(np.float32)
    return Layout(size, s, cells, nuclei, nucleoli, rho, junction, free_edge, tuple(cell_list))
