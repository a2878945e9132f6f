"""The reference channels: blue (DAPI), red (microtubules) and yellow (ER).

These channels depend only on the :class:`~hpa.synthetic.layout.Layout` and their own
random generator, never on the protein (green) labels, so segmentation trained or tested
on them can never see the answer. The structure maps computed on the way (microtubule
filaments, ER mesh, mitotic spindle, cytokinetic bridge) are kept so that the green
patterns of the classes that follow these structures (6, 14, 16, 17) trace them exactly.

All maps are float32 "signal" images, roughly 0–1, before acquisition (illumination,
blur, noise, quantisation; see :mod:`hpa.synthetic.imaging`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hpa.synthetic.layout import DAUGHTER, INTERPHASE, MITOTIC, Cell, Layout, bandpass_noise, smooth_noise


@dataclass(frozen=True)
class Reference:
    """Reference channels and the structure maps green patterns trace.

    Attributes:
        red: ``(H, W)`` float32 microtubule channel.
        blue: ``(H, W)`` float32 nucleus (DAPI) channel.
        yellow: ``(H, W)`` float32 ER channel.
        microtubules: ``(H, W)`` float32 filament map, 0–1 per cell, no brightness scaling.
        er: ``(H, W)`` float32 ER mesh map, 0–1.
        spindle: ``(H, W)`` float32 spindle map of mitotic cells.
        bridge: ``(H, W)`` float32 cytokinetic bridge map of dividing pairs.
    """

    red: np.ndarray
    blue: np.ndarray
    yellow: np.ndarray
    microtubules: np.ndarray
    er: np.ndarray
    spindle: np.ndarray
    bridge: np.ndarray


def draw_filaments(
    canvas: np.ndarray,
    starts: np.ndarray,
    angles: np.ndarray,
    step: float,
    n_steps: int,
    wiggle: float,
    rng: np.random.Generator,
    thickness: int = 1,
    batches: int = 3,
) -> None:
    """Add random-walk polylines (filaments) to ``canvas`` in place.

    Each filament starts at ``starts[i]`` heading ``angles[i]`` and takes ``n_steps``
    steps of ``step`` pixels, turning by ``N(0, wiggle)`` radians at each. OpenCV
    overwrites where lines cross, so the filaments are drawn in ``batches`` layers and
    summed: crossings are brighter, as in a real projection.

    Args:
        canvas: ``(h, w)`` float32 image, modified in place.
        starts: ``(n, 2)`` start points ``(x, y)`` in canvas coordinates.
        angles: ``(n,)`` initial headings, radians.
        step: segment length in pixels.
        n_steps: segments per filament.
        wiggle: standard deviation of the turn per segment, radians.
        rng: random generator.
        thickness: line width in pixels.
        batches: layers the filaments are split into.
    """
    n = len(starts)
    if n == 0:
        return
    heading = angles[:, None] + np.cumsum(rng.normal(0, wiggle, (n, n_steps)), axis=1)
    steps = step * np.stack([np.cos(heading), np.sin(heading)], axis=-1)
    pts = np.concatenate([starts[:, None, :], starts[:, None, :] + np.cumsum(steps, axis=1)], axis=1)
    fixed = np.round(pts * 16).astype(np.int32)  # 4 fractional bits (shift=4)
    for b in range(batches):
        layer = np.zeros_like(canvas)
        cv2.polylines(layer, list(fixed[b::batches]), False, 1.0, thickness, cv2.LINE_8, 4)
        canvas += layer


def _cell_frame(layout: Layout, cell: Cell) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Bounding-box slices, own-cell mask and own-nucleus mask of a cell."""
    sl = cell.slices
    return sl, layout.cells[sl] == cell.id, layout.nuclei[sl] == cell.id


def _microtubules(layout: Layout, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = layout.scale
    size = layout.size
    mt = np.zeros((size, size), np.float32)
    spindle = np.zeros_like(mt)
    bridge = np.zeros_like(mt)
    for cell in layout.cell_list:
        sl, own, nuc = _cell_frame(layout, cell)
        y0, x0 = sl[0].start, sl[1].start
        canvas = np.zeros(own.shape, np.float32)
        if cell.kind == MITOTIC:  # bipolar spindle: fans from two poles to the plate, plus asters
            a = cell.nucleus_axes[0]
            c = np.array(cell.nucleus_centre) - (x0, y0)
            along = np.array([np.cos(cell.nucleus_angle), np.sin(cell.nucleus_angle)])
            normal = np.array([-along[1], along[0]])
            for sign in (-1.0, 1.0):
                pole = c + sign * normal * 1.25 * a
                ends = c + along * rng.uniform(-1.0, 1.0, (28, 1)) * a - sign * normal * 0.1 * a
                for e in ends:
                    cv2.line(canvas, _pt(pole), _pt(e), 1.0, max(1, round(s)), cv2.LINE_8, 4)
                aster = rng.uniform(0, 2 * np.pi, 14)
                draw_filaments(canvas, np.repeat(pole[None], 14, 0), aster, 3 * s, 4, 0.1, rng)
            spindle[sl] += cv2.GaussianBlur(canvas, (0, 0), 0.8 * s) * own
            continue
        # A third of the filaments leave the MTOC; the rest start around the nucleus and
        # run outward, bending, to the cell edge.
        mtoc = np.array(cell.mtoc) - (x0, y0)
        nc = np.array(cell.nucleus_centre) - (x0, y0)
        n = int(rng.uniform(90, 130) * cell.radius / 60)
        n_aster = n // 3
        phi = rng.uniform(0, 2 * np.pi, n - n_aster)
        ring = nc + cell.nucleus_axes[0] * rng.uniform(0.6, 1.1, (phi.size, 1)) * np.stack(
            [np.cos(phi), np.sin(phi)], 1
        )
        starts = np.concatenate([mtoc + rng.normal(0, 3 * s, (n_aster, 2)), ring])
        heads = np.concatenate([rng.uniform(0, 2 * np.pi, n_aster), phi + rng.normal(0, 0.6, phi.size)])
        draw_filaments(canvas, starts, heads, cell.radius / 8, 14, 0.2, rng)
        canvas *= 1.0 - 0.65 * nuc
        mt[sl] += canvas * own
        if cell.kind == DAUGHTER and cell.partner > cell.id:
            other = layout.cell(cell.partner)
            p, q = np.array(cell.centre), np.array(other.centre)
            u = (q - p) / (np.linalg.norm(q - p) + 1e-6)
            mid = 0.5 * (p + q)
            half = 0.35 * np.linalg.norm(q - p)
            cv2.line(
                bridge, _pt(mid - half * u), _pt(mid + half * u), 1.0, max(1, round(1.6 * s)), cv2.LINE_8, 4
            )
            cv2.circle(bridge, _pt(mid), max(1, round(2.2 * s)), 1.5, -1, cv2.LINE_8, 4)
    bridge = cv2.GaussianBlur(bridge, (0, 0), 0.7 * s) * (layout.cells > 0)
    return np.minimum(mt, 2.5) / 2.5, spindle, bridge


def _pt(p: np.ndarray) -> tuple[int, int]:
    """A point in OpenCV fixed-point coordinates (shift=4)."""
    return round(float(p[0]) * 16), round(float(p[1]) * 16)


def _er_mesh(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    s = layout.scale
    shape = (layout.size, layout.size)
    band = bandpass_noise(rng, shape, 1.1 * s, 3.0 * s)
    ridges = np.exp(-((band / 0.5) ** 2))
    grain = np.clip(bandpass_noise(rng, shape, 0.7 * s, 2.0 * s), 0, None)
    cyto = (layout.cells > 0) & (layout.nuclei == 0)
    density = np.where(cyto, 0.15 + 0.85 * (1.0 - layout.rho) ** 1.8, 0.05 * (layout.nuclei > 0))
    kinds = np.array(["", *[c.kind for c in layout.cell_list]])
    round_cell = np.isin(kinds, [MITOTIC])[layout.cells]
    density = np.where(round_cell, 0.5, density)
    return ((0.25 + 0.6 * ridges + 0.15 * grain) * density).astype(np.float32)


def _dapi(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    s = layout.scale
    shape = (layout.size, layout.size)
    n = len(layout.cell_list)
    bright = np.concatenate([[0.0], rng.lognormal(0.0, 0.22, n)]).astype(np.float32)
    for c in layout.cell_list:
        bright[c.id] *= {INTERPHASE: 1.0, MITOTIC: 2.2, DAUGHTER: 1.7}[c.kind]
    fine = bandpass_noise(rng, shape, 1.0 * s, 3.5 * s)
    coarse = smooth_noise(rng, shape, 12 * s)
    texture = np.clip(1.0 + 0.22 * fine + 0.12 * coarse, 0.3, None)
    # Chromatin is a little denser toward the nuclear periphery.
    d_in = cv2.distanceTransform((layout.nuclei > 0).astype(np.uint8), cv2.DIST_L2, 3)
    rim = 1.0 + 0.15 * np.exp(-d_in / (3.0 * s))
    blue = bright[layout.nuclei] * texture * rim * (1.0 - 0.6 * layout.nucleoli)
    return cv2.GaussianBlur(blue.astype(np.float32), (0, 0), 0.7 * s)


def draw_reference(layout: Layout, rng: np.random.Generator) -> Reference:
    """Draw the blue, red and yellow channels of a layout.

    Args:
        layout: the cell geometry.
        rng: random generator used for nothing else (keeps green out of these channels).

    Returns:
        The :class:`Reference` maps, each ``(H, W)`` float32.
    """
    s = layout.scale
    n = len(layout.cell_list)
    blue = _dapi(layout, rng)
    mt, spindle, bridge = _microtubules(layout, rng)
    er = _er_mesh(layout, rng)
    inside = (layout.cells > 0).astype(np.float32)
    soft = cv2.GaussianBlur(inside, (0, 0), 1.5 * s) * inside
    rho = layout.rho
    tub_bright = np.concatenate([[0.0], rng.lognormal(0.0, 0.3, n)]).astype(np.float32)
    diffuse_mt = soft * (0.07 + 0.08 * (1.0 - rho))
    red = tub_bright[layout.cells] * (0.9 * mt + diffuse_mt) + 1.2 * spindle + 1.2 * bridge
    er_bright = np.concatenate([[0.0], rng.lognormal(0.0, 0.3, n)]).astype(np.float32)
    yellow = er_bright[layout.cells] * er * soft
    red = cv2.GaussianBlur(red.astype(np.float32), (0, 0), 0.6 * s)
    yellow = cv2.GaussianBlur(yellow.astype(np.float32), (0, 0), 0.6 * s)
    return Reference(red, blue, yellow, mt, er * soft, spindle, bridge)
