"""Green (protein) patterns: one drawing per 2018 class, placed by the cell geometry.

Every one of the 28 classes has its own drawing (see ``localisation-patterns.md``). Pairs
that biology draws alike are kept apart by a learnable difference:

- MTOC (18): one large soft dot beside the nucleus with a faint aster of short radial
  lines; centrosome (19): a pair of small sharp dots there, no aster.
- Focal adhesions (13): 10-25 bright dashes, 5-8 px, at the extreme cell edge;
  microtubule ends (15): 40-80 tiny comets over the outer half, on a faint microtubule
  network.
- Lysosomes (10): small dots and small rings (r 2-3 px) crowded near the nucleus; lipid
  droplets (20): larger rings (r 3-6 px) anywhere in the cytoplasm; endosomes (9):
  mixed-size dots, perinuclear-biased, no rings; peroxisomes (8): many tiny uniform dots
  spread evenly.
- Cytoplasmic bodies (26): 2-6 medium dots anywhere in the cytoplasm; aggresome (24):
  one large blob against the nucleus; nuclear bodies (5): sharp dots in the nucleus.
- Intermediate filaments (11): thick wavy filaments running around the nucleus (a cage);
  microtubules (14): the thin radial red network; actin (12): long straight parallel
  fibres plus a cortical rim.
- Plasma membrane (21): the whole outline, brightest at free edges; cell junctions (22):
  only the borders shared with another cell.
- Nucleoli (2): the nucleolus bodies filled; fibrillar centre (3): 2-5 tiny dots inside
  each nucleolus on a faint nucleolus.

Each pattern returns a float32 patch over the cell's bounding box with structures
peaking near 1 (lengths at 512 px, scaled with the image); the caller masks and scales it.
"""

from __future__ import annotations

import cv2
import numpy as np

from hpa.synthetic.layout import Layout
from hpa.synthetic.reference import Reference, draw_filaments
from hpa.synthetic.shapes import (
    CellView,
    Pattern,
    count,
    outline_distance,
    rings,
    sample_points,
    segments,
    spots,
)

Rng = np.random.Generator


# ------------------------------------------------------------------ nucleus ---


def nucleoplasm(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    return 0.6 * v.nuc * (1.0 - 0.95 * lay.nucleoli[v.cell.slices])


def nuclear_membrane(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    d = np.where(v.nuc, outline_distance(v.nuc), outline_distance(~v.nuc) + 1.0)
    return np.exp(-(((d - 1.0) / (1.1 * v.s)) ** 2)) + 0.05 * v.nuc


def nucleoli(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    return lay.nucleoli[v.cell.slices] * v.nuc + 0.04 * v.nuc


def fibrillar_center(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = []
    for x, y, r in v.cell.nucleoli:
        k = int(rng.integers(2, 6))
        ang, rr = rng.uniform(0, 2 * np.pi, k), r * np.sqrt(rng.uniform(0, 0.45, k))
        pts.append(v.local((x, y)) + np.stack([rr * np.cos(ang), rr * np.sin(ang)], 1))
    dots = spots(v.own.shape, np.concatenate(pts) if pts else np.zeros((0, 2)), 0.7 * v.s)
    return dots + 0.12 * lay.nucleoli[v.cell.slices] * v.nuc


def speckles(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    region = v.nuc & (lay.nucleoli[v.cell.slices] < 0.1)
    pts = sample_points(region, int(rng.integers(15, 41)), rng)
    blobs = spots(v.own.shape, pts, 1.6 * v.s, rng.uniform(0.6, 1.0, len(pts)))
    lobes = spots(v.own.shape, pts + rng.normal(0, 1.8 * v.s, pts.shape), 1.1 * v.s, 0.6)
    return (blobs + lobes) * region + 0.12 * region


def nuclear_bodies(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.nuc & (outline_distance(v.nuc) > 3 * v.s), int(rng.integers(1, 11)), rng)
    return spots(v.own.shape, pts, 0.9 * v.s, rng.uniform(0.8, 1.0, len(pts))) + 0.02 * v.nuc


# ------------------------------------------------------ membranes, organelles ---


def endoplasmic_reticulum(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    return 1.1 * ref.er[v.cell.slices] * v.own


def golgi(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    c, out = v.cell, v.blank()
    centre = v.local(c.nucleus_centre)
    a, b = c.nucleus_axes
    mid = np.degrees(c.polarity - c.nucleus_angle)
    for _ in range(int(rng.integers(3, 7))):
        f = rng.uniform(1.08, 1.4)
        span = rng.uniform(20, 50)
        start = mid + rng.normal(0, 12) - span / 2
        cv2.ellipse(out, (round(centre[0] * 16), round(centre[1] * 16)), (round(a * f * 16), round(b * f * 16)),
                    np.degrees(c.nucleus_angle), start, start + span, 1.0, max(1, round(2 * v.s)), cv2.LINE_8, 4)  # fmt: skip
    return cv2.GaussianBlur(out, (0, 0), 1.0 * v.s) * 1.6


def peroxisomes(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.cyto, count(v, rng.uniform(70, 130)), rng)
    return spots(v.own.shape, pts, 0.75 * v.s, rng.uniform(0.75, 0.9, len(pts)))


def endosomes(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.cyto, count(v, rng.uniform(25, 60)), rng, (1.0 - v.rho) ** 1.5)
    out = v.blank()
    for part, sigma in zip(np.array_split(pts, 3), (0.8, 1.3, 2.0), strict=True):
        out += spots(v.own.shape, part, sigma * v.s, rng.uniform(0.4, 1.0, len(part)))
    return out


def lysosomes(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.cyto, count(v, rng.uniform(15, 35)), rng, (1.0 - v.rho) ** 5)
    n_ring = len(pts) * 2 // 5
    out = spots(v.own.shape, pts[n_ring:], 1.0 * v.s, rng.uniform(0.6, 1.0, len(pts) - n_ring))
    return out + rings(v.own.shape, pts[:n_ring], rng.uniform(2.0, 3.0, n_ring) * v.s, v.s, v.s)


def lipid_droplets(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.cyto & (v.rho > 0.1) & (v.rho < 0.85), int(rng.integers(5, 21)), rng)
    radii = rng.uniform(3.0, 6.0, len(pts)) * v.s
    return rings(v.own.shape, pts, radii, 1.6 * v.s, v.s) * 1.2


def mitochondria(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    out = v.blank()
    n = count(v, rng.uniform(90, 150))
    pts = sample_points(v.cyto, n, rng, (1.0 - v.rho) ** 1.2)
    draw_filaments(out, pts, rng.uniform(0, 2 * np.pi, n), 2.5 * v.s, int(rng.integers(3, 6)), 0.5, rng,
                   max(1, round(1.3 * v.s)), batches=2)  # fmt: skip
    branches = pts[: n // 3] + rng.normal(0, 2 * v.s, (n // 3, 2))
    draw_filaments(out, branches, rng.uniform(0, 2 * np.pi, n // 3), 2.5 * v.s, 2, 0.5, rng, 1, batches=1)
    return cv2.GaussianBlur(np.minimum(out, 2.0), (0, 0), 0.6 * v.s) * 0.7


def aggresome(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    c, out = v.cell, v.blank()
    p = v.local(c.nucleus_centre) + 1.25 * c.nucleus_axes[0] * np.array(
        [np.cos(c.polarity), np.sin(c.polarity)]
    )
    axes = (max(1, round(rng.uniform(5, 9) * v.s * 16)), max(1, round(rng.uniform(4, 7) * v.s * 16)))
    cv2.ellipse(
        out, (round(p[0] * 16), round(p[1] * 16)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_8, 4
    )
    return cv2.GaussianBlur(out, (0, 0), 1.5 * v.s) * 1.4 + 0.08 * v.cyto


def cytosol(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    return 0.45 * v.cyto * (0.6 + 0.4 * (1.0 - v.rho)) + 0.04 * v.nuc


def cytoplasmic_bodies(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.cyto & (v.rho > 0.15) & (v.rho < 0.9), int(rng.integers(2, 7)), rng)
    return spots(v.own.shape, pts, 1.6 * v.s, rng.uniform(0.9, 1.2, len(pts)))


def rods_rings(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.cyto & (v.rho > 0.1), int(rng.integers(2, 7)), rng)
    n_rod = (len(pts) + 1) // 2
    rods = segments(v.own.shape, pts[:n_rod], rng.uniform(0, np.pi, n_rod), rng.uniform(6, 12, n_rod) * v.s,
                    2 * v.s)  # fmt: skip
    out = cv2.GaussianBlur(rods, (0, 0), 0.7 * v.s)
    return out + rings(
        v.own.shape, pts[n_rod:], rng.uniform(3.0, 4.0, len(pts) - n_rod) * v.s, 1.5 * v.s, v.s
    )


# ------------------------------------------------------------- cytoskeleton ---


def intermediate_filaments(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    c, out = v.cell, v.blank()
    n = count(v, rng.uniform(25, 40))
    phi = rng.uniform(0, 2 * np.pi, n)
    r = c.nucleus_axes[0] * rng.uniform(1.05, 2.0, (n, 1))
    starts = v.local(c.nucleus_centre) + r * np.stack([np.cos(phi), np.sin(phi)], 1)
    heads = phi + np.pi / 2 * rng.choice([-1, 1], n) + rng.normal(0, 0.25, n)
    draw_filaments(out, starts, heads, c.radius / 9, 10, 0.28, rng, max(1, round(1.8 * v.s)))
    return cv2.GaussianBlur(np.minimum(out, 2.0), (0, 0), 0.8 * v.s) * 0.8


def actin(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    c, out = v.cell, v.blank()
    n = count(v, rng.uniform(12, 24))
    alpha = rng.uniform(0, np.pi)
    along, across = np.array([np.cos(alpha), np.sin(alpha)]), np.array([-np.sin(alpha), np.cos(alpha)])
    centres = v.local(c.centre) + rng.uniform(-1, 1, (n, 1)) * c.radius * across
    starts = centres - 1.3 * c.radius * along
    draw_filaments(out, starts, alpha + rng.normal(0, 0.06, n), 2.6 * c.radius / 8, 8, 0.01, rng,
                   max(1, round(1.3 * v.s)))  # fmt: skip
    cortex = np.exp(-(outline_distance(v.own) - 1.0) / (1.5 * v.s)) * 0.9
    return cv2.GaussianBlur(np.minimum(out, 1.5), (0, 0), 0.6 * v.s) * 0.8 + cortex


def focal_adhesions(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.cyto & (v.rho > 0.82) & (v.rho < 0.97), count(v, rng.uniform(10, 25)), rng)
    heads = np.arctan2(*(pts - v.local(v.cell.centre)).T[::-1]) if len(pts) else np.zeros(0)
    dashes = segments(v.own.shape, pts, heads, rng.uniform(5, 8, len(pts)) * v.s, 2 * v.s)
    return cv2.GaussianBlur(dashes, (0, 0), 0.6 * v.s) * 1.2 + 0.04 * v.cyto


def microtubules(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    return ref.microtubules[v.cell.slices] * 1.2 + 0.05 * v.cyto


def microtubule_ends(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    pts = sample_points(v.cyto & (v.rho > 0.45) & (v.rho < 0.95), count(v, rng.uniform(40, 80)), rng)
    heads = np.arctan2(*(pts - v.local(v.cell.mtoc)).T[::-1]) if len(pts) else np.zeros(0)
    comets = segments(v.own.shape, pts, heads, np.full(len(pts), 2.5 * v.s), v.s)
    return cv2.GaussianBlur(comets, (0, 0), 0.6 * v.s) * 1.1 + 0.15 * ref.microtubules[v.cell.slices]


def cytokinetic_bridge(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    return ref.bridge[v.cell.slices] * 1.3


def mitotic_spindle(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    return ref.spindle[v.cell.slices] * 1.2 + 0.05 * v.cyto


def mtoc(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    p = v.local(v.cell.mtoc)
    n = 12
    aster = segments(
        v.own.shape, np.repeat(p[None], n, 0), rng.uniform(0, 2 * np.pi, n), np.full(n, 16 * v.s), 1
    )
    return 0.25 * cv2.GaussianBlur(aster, (0, 0), v.s) + spots(v.own.shape, p[None], 2.2 * v.s, 1.3)


def centrosome(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    p = v.local(v.cell.mtoc)
    a = rng.uniform(0, np.pi)
    d = 1.8 * v.s * np.array([np.cos(a), np.sin(a)])
    return spots(v.own.shape, np.stack([p - d, p + d]), 0.8 * v.s, 1.2)


def plasma_membrane(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    rim = np.exp(-(outline_distance(v.own) - 1.0) / (1.1 * v.s))
    free = cv2.GaussianBlur(lay.free_edge[v.cell.slices].astype(np.float32), (0, 0), 4 * v.s)
    return rim * (0.55 + 0.45 * np.minimum(free * 4, 1.0)) * 1.2


def cell_junctions(v: CellView, lay: Layout, ref: Reference, rng: Rng) -> np.ndarray:
    junc = lay.junction[v.cell.slices] & v.own
    if not junc.any():
        return v.blank()
    d = cv2.distanceTransform((~junc).astype(np.uint8), cv2.DIST_L2, 3)
    return np.exp(-((d / (1.3 * v.s)) ** 2)) * 1.3


#: Drawing of each 2018 class, by class number.
PATTERNS: dict[int, Pattern] = dict(
    enumerate(
        [
            nucleoplasm, nuclear_membrane, nucleoli, fibrillar_center, speckles, nuclear_bodies,
            endoplasmic_reticulum, golgi, peroxisomes, endosomes, lysosomes, intermediate_filaments,
            actin, focal_adhesions, microtubules, microtubule_ends, cytokinetic_bridge, mitotic_spindle,
            mtoc, centrosome, lipid_droplets, plasma_membrane, cell_junctions, mitochondria, aggresome,
            cytosol, cytoplasmic_bodies, rods_rings,
        ]
    )
)  # fmt: skip
