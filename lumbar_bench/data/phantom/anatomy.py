"""The analytic 3D lumbar spine of one synthetic patient, in patient millimetres (DICOM LPS).

The spine is a smooth curve ``C(s)`` parameterised by arc length ``s`` (``s = 0`` at the
sacrum's top endplate, growing upwards) with a moving frame: tangent ``T``, lateral ``Nu``
(towards the patient's left, +x) and posterior ``Nv`` (+y). Every structure is defined in the
straightened local coordinates ``(u, v, s)``: vertebral bodies and discs are intervals of ``s``,
the canal is a tube at ``v = canal_v`` and so on. :func:`local_coords` maps patient points to
``(u, v, s)``, so any slice in any orientation is drawn by evaluating shapes on its pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumbar_bench.constants import CONDITIONS, LEVELS

#: Vertebrae above the sacrum, bottom up; SPIDER label = index + 1 (L5 = 1).
VERTEBRAE: tuple[str, ...] = ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10")
#: Discs, bottom up; SPIDER label = 201 + index (L5/S1 = 201).
DISCS: tuple[str, ...] = ("L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2", "T12/L1", "T11/T12", "T10/T11")
#: Typical body heights, disc heights, body half-widths and half-depths (mm), bottom up.
BODY_HEIGHT = (27.5, 27.5, 27.0, 26.5, 25.5, 24.0, 23.0, 22.0)
DISC_HEIGHT = (10.5, 11.5, 10.5, 9.5, 8.5, 7.0, 6.0, 5.5)
BODY_HALF_WIDTH = (25.0, 24.5, 24.0, 23.0, 22.0, 20.5, 19.5, 18.5)
BODY_HALF_DEPTH = (17.0, 17.0, 16.5, 16.0, 15.5, 15.0, 14.5, 14.0)
SPIDER_CANAL = 100
SPIDER_PARTIAL_OFFSET = 100
SPIDER_DISC_BASE = 201
#: Arc-length range and step of the tabulated curve (mm).
S_MIN, S_MAX, S_STEP = -140.0, 330.0, 0.25
#: Segment kinds of the ``s`` intervals.
KIND_NONE, KIND_BODY, KIND_DISC, KIND_SACRUM = 0, 1, 2, 3
#: Newton steps projecting a point onto the spine curve.
NEWTON_STEPS = 3


@dataclass(frozen=True, eq=False)
class Spine:
    """One patient's spine: curve table, segment layout, canal and pathology amounts.

    ``frame`` is ``(m, 12)``: ``C`` (3), ``T`` (3), ``Nu`` (3), ``Nv`` (3) at ``S_MIN + i * S_STEP``.
    Segments (``seg_*``) are the ``s`` intervals between ``edges`` (bottom up) with a kind,
    SPIDER label, half-width ``a``, half-depth ``b`` and the vertebra or disc index.
    ``severity`` is ``(5, 5)`` continuous narrowing in [0, 1] (``CONDITIONS`` x ``LEVELS``).
    """

    frame: np.ndarray
    edges: np.ndarray
    seg_kind: np.ndarray
    seg_label: np.ndarray
    seg_a: np.ndarray
    seg_b: np.ndarray
    seg_index: np.ndarray
    vert_center: np.ndarray
    vert_half: np.ndarray
    vert_label: np.ndarray
    vert_b: np.ndarray
    disc_center: np.ndarray
    disc_half: np.ndarray
    disc_label: np.ndarray
    disc_level: np.ndarray
    disc_severity: np.ndarray
    hydration: np.ndarray
    canal_a: float
    canal_b: float
    canal_v: float
    trunk: tuple[float, float, float, float]
    severity: np.ndarray
    transitional: str

    @property
    def columns(self) -> list[np.ndarray]:
        """Float32 columns of ``frame``, the arc length of each row (12) and ``dT/ds`` (13-15)."""
        cached = self.__dict__.get("_columns")
        if cached is None:
            s = (S_MIN + np.arange(len(self.frame)) * S_STEP).astype(np.float32)
            bend = np.gradient(self.frame[:, 3:6], S_STEP, axis=0)
            cached = [np.ascontiguousarray(self.frame[:, j], dtype=np.float32) for j in range(12)] + [s]
            cached += [np.ascontiguousarray(bend[:, j], dtype=np.float32) for j in range(3)]
            object.__setattr__(self, "_columns", cached)
        return cached

    @property
    def inverse_z(self) -> tuple[float, float, np.ndarray]:
        """``(z0, dz, rows)``: the curve row whose height is nearest to ``z0 + k * dz``."""
        cached = self.__dict__.get("_inverse_z")
        if cached is None:
            zc = self.frame[:, 2]
            grid = np.arange(zc[0], zc[-1], S_STEP)
            rows = np.rint(np.interp(grid, zc, np.arange(len(zc)))).astype(np.int32)
            cached = (float(zc[0]), S_STEP, rows)
            object.__setattr__(self, "_inverse_z", cached)
        return cached

    def point(self, s: float, u: float = 0.0, v: float = 0.0) -> np.ndarray:
        """Patient position (mm) of local coordinates ``(u, v, s)``."""
        row = self.frame[_index(np.asarray(s, dtype=np.float64))]
        return row[0:3] + u * row[6:9] + v * row[9:12]

    def tangent(self, s: float) -> np.ndarray:
        """Return the unit tangent of the spine curve at ``s``."""
        return self.frame[_index(np.asarray(s, dtype=np.float64)), 3:6].copy()

    def level_disc(self, level: int) -> int:
        """Disc index (bottom up) of a ``LEVELS`` index."""
        return int(np.flatnonzero(self.disc_level == level)[0])

    def vertebra_span(self, label: int) -> tuple[float, float]:
        """``(s_low, s_high)`` of the body with SPIDER ``label``."""
        k = int(np.flatnonzero(self.vert_label == label)[0])
        return float(self.vert_center[k] - self.vert_half[k]), float(self.vert_center[k] + self.vert_half[k])

    def foramen_centre(self, disc: int) -> tuple[float, float, float, float]:
        """``(s_centre, s_radius, v_centre, v_radius)`` of the foramina at a disc."""
        if disc > 0:
            lo_top = self.vert_center[disc - 1] + 0.8 * self.vert_half[disc - 1]
        else:
            lo_top = self.disc_center[0] - self.disc_half[0] - 2.5
        hi_bottom = self.vert_center[disc] - 0.15 * self.vert_half[disc]
        s_c = 0.5 * (lo_top + hi_bottom)
        s_r = 0.5 * (hi_bottom - lo_top) - 0.5
        return float(s_c), float(s_r), float(self.vert_b[disc] + 5.5), 5.0

    def recess_centre(self) -> tuple[float, float]:
        """``(|u|, v)`` of the lateral recess centres (the subarticular zones)."""
        return self.canal_a - 1.0, self.canal_v - 0.3 * self.canal_b


def _index(s: np.ndarray) -> np.ndarray:
    """Nearest row of the curve table for arc lengths ``s``."""
    i = np.rint((s - S_MIN) * (1.0 / S_STEP)).astype(np.int64)
    return np.clip(i, 0, round((S_MAX - S_MIN) / S_STEP))


def local_coords(spine: Spine, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Local ``(u, v, s)`` of patient points (float32 arrays of any equal shape).

    ``s`` starts from ``z`` through the curve's monotone height and is refined by Newton
    steps on ``(P - C(s)) . T(s) = 0``; ``u`` and ``v`` are the offsets along the frame at ``s``.
    """
    cols = spine.columns
    z0, dz, s_of_z = spine.inverse_z
    i = np.take(s_of_z, np.clip(np.rint((z - z0) * (1.0 / dz)).astype(np.int32), 0, len(s_of_z) - 1))
    last = len(cols[0]) - 1
    for _ in range(NEWTON_STEPS):
        dx, dy, dzz = x - np.take(cols[0], i), y - np.take(cols[1], i), z - np.take(cols[2], i)
        along = dx * np.take(cols[3], i) + dy * np.take(cols[4], i) + dzz * np.take(cols[5], i)
        bend = dx * np.take(cols[13], i) + dy * np.take(cols[14], i) + dzz * np.take(cols[15], i)
        s = np.take(cols[12], i) + along / np.maximum(np.float32(1.0) - bend, np.float32(0.3))
        i = np.clip(np.rint((s - np.float32(S_MIN)) * np.float32(1.0 / S_STEP)).astype(np.int32), 0, last)
    dx, dy, dzz = x - np.take(cols[0], i), y - np.take(cols[1], i), z - np.take(cols[2], i)
    s = np.take(cols[12], i) + dx * np.take(cols[3], i) + dy * np.take(cols[4], i) + dzz * np.take(cols[5], i)
    u = dx * np.take(cols[6], i) + dy * np.take(cols[7], i) + dzz * np.take(cols[8], i)
    v = dx * np.take(cols[9], i) + dy * np.take(cols[10], i) + dzz * np.take(cols[11], i)
    return u, v, s


def _curve(rng: np.random.Generator, s_l3: float, scoliosis: bool) -> np.ndarray:
    """Tabulated curve and frame ``(m, 12)`` with the L3 centre at the origin."""
    s = np.arange(S_MIN, S_MAX + S_STEP / 2, S_STEP)
    phi0 = -np.deg2rad(rng.uniform(15, 28))
    k = np.deg2rad(rng.uniform(25, 45)) / 185.0
    phi = np.where(s >= 0, phi0 + k * np.minimum(s, 185.0), np.maximum(phi0 + 0.006 * s, -np.deg2rad(55)))
    psi = np.full_like(s, np.deg2rad(rng.uniform(-2.5, 2.5)))
    if scoliosis:
        amp = np.deg2rad(rng.uniform(12, 20)) * rng.choice([-1.0, 1.0])
        psi = psi + amp * np.sin(2 * np.pi * (s - s_l3) / rng.uniform(180, 240))
    t = np.stack([np.sin(psi), np.cos(psi) * np.sin(phi), np.cos(psi) * np.cos(phi)], axis=1)
    c = np.cumsum(t * S_STEP, axis=0)
    c -= c[_index(np.asarray(s_l3))]
    nv = np.array([0.0, 1.0, 0.0]) - t[:, 1:2] * t
    nv /= np.linalg.norm(nv, axis=1, keepdims=True)
    nu = np.cross(nv, t)
    return np.concatenate([c, t, nu, nv], axis=1)


def _layout(
    rng: np.random.Generator, scale: float, transitional: str, disc_degeneration: np.ndarray
) -> dict[str, np.ndarray]:
    """Vertebra and disc intervals along ``s`` (bottom up), with sizes and labels.

    Segment arrays are indexed by ``searchsorted(edges, s, side="right")``: entry 0 and the
    last entry are empty space, entry 1 the sacrum, then discs and bodies alternate.
    """
    body_h = np.array(BODY_HEIGHT) * scale * rng.uniform(0.93, 1.07, len(VERTEBRAE))
    disc_h = (
        np.array(DISC_HEIGHT) * scale * rng.uniform(0.93, 1.07, len(DISCS)) * (1 - 0.3 * disc_degeneration)
    )
    if transitional == "sacralised":
        disc_h[0] = rng.uniform(1.5, 3.0)
    segs: list[tuple[int, int, float, float, int]] = []  # kind, label, a, b, index
    edges, s = [S_MIN - 1.0], 0.0
    if transitional == "lumbarised":  # a free S1 segment (and an S1/S2 disc) above the sacrum
        for kind, h in ((KIND_DISC, 5.0 * scale), (KIND_BODY, 25.0 * scale)):
            segs.append((kind, 0, 24.5 * scale, 17.0 * scale, -1))
            edges.append(s)
            s += h
    vert_c, vert_h, disc_c, disc_hh = [], [], [], []
    for i in range(len(VERTEBRAE)):
        a, b = BODY_HALF_WIDTH[i] * scale, BODY_HALF_DEPTH[i] * scale
        edges.append(s)
        segs.append((KIND_DISC, SPIDER_DISC_BASE + i, a, b, i))
        disc_c.append(s + disc_h[i] / 2), disc_hh.append(disc_h[i] / 2)
        s += disc_h[i]
        edges.append(s)
        broad = 1.3 if transitional == "sacralised" and i == 0 else 1.0
        segs.append((KIND_BODY, i + 1, a * broad, b, i))
        vert_c.append(s + body_h[i] / 2), vert_h.append(body_h[i] / 2)
        s += body_h[i]
    edges.append(s)
    table = [
        (KIND_NONE, 0, 1.0, 1.0, -1),
        (KIND_SACRUM, 0, 26.0 * scale, 17.0 * scale, -1),
        *segs,
        (KIND_NONE, 0, 1.0, 1.0, -1),
    ]
    cols = list(zip(*table, strict=True))
    return {
        "edges": np.array(edges),
        "seg_kind": np.array(cols[0]),
        "seg_label": np.array(cols[1]),
        "seg_a": np.array(cols[2]),
        "seg_b": np.array(cols[3]),
        "seg_index": np.array(cols[4]),
        "vert_center": np.array(vert_c),
        "vert_half": np.array(vert_h),
        "disc_center": np.array(disc_c),
        "disc_half": np.array(disc_hh),
    }


def sample_spine(
    rng: np.random.Generator,
    severity: np.ndarray,
    degeneration: float,
    *,
    transitional: str = "",
    scoliosis: bool = False,
) -> Spine:
    """Draw one patient's spine with the given ``(5, 5)`` narrowing amounts.

    ``transitional`` is ``""``, ``"sacralised"`` (a rudimentary L5/S1 disc, broad L5) or
    ``"lumbarised"`` (a free S1 segment that looks like an L6); labels keep the radiologist's
    L1-L5 count from the top.
    """
    scale = rng.uniform(0.9, 1.1)
    n_disc = len(DISCS)
    level = np.array([len(LEVELS) - 1 - i if i < len(LEVELS) else -1 for i in range(n_disc)])
    disc_sev = np.zeros((n_disc, len(CONDITIONS)))
    disc_sev[level >= 0] = severity.T[level[level >= 0]]
    disc_sev[level < 0] = rng.uniform(0.0, 0.12, (int((level < 0).sum()), len(CONDITIONS)))
    disc_deg = np.clip(0.5 * disc_sev.mean(axis=1) + 0.15 * degeneration + rng.normal(0, 0.08, n_disc), 0, 1)
    lay = _layout(rng, scale, transitional, disc_deg)
    frame = _curve(rng, float(lay["vert_center"][2]), scoliosis)
    anchor = np.array([rng.uniform(-12, 12), rng.uniform(10, 60), rng.uniform(-120, 120)])
    frame[:, 0:3] += anchor
    canal_a, canal_b = rng.uniform(10.0, 12.5) * scale, rng.uniform(7.0, 9.0) * scale
    vert_b = np.array(BODY_HALF_DEPTH) * scale
    trunk_fat = rng.uniform(8.0, 30.0)
    canal_v = float(vert_b[2] + 1.5 + canal_b)
    skin_v = canal_v + canal_b + 32.0 + trunk_fat
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731  (per-pixel tables stay float32)
    return Spine(
        frame=frame,
        edges=f32(lay["edges"]),
        seg_kind=lay["seg_kind"],
        seg_label=lay["seg_label"].astype(np.uint16),
        seg_a=f32(lay["seg_a"]),
        seg_b=f32(lay["seg_b"]),
        seg_index=lay["seg_index"],
        vert_center=f32(lay["vert_center"]),
        vert_half=f32(lay["vert_half"]),
        vert_label=np.arange(1, len(VERTEBRAE) + 1, dtype=np.uint16),
        vert_b=f32(vert_b),
        disc_center=f32(lay["disc_center"]),
        disc_half=f32(lay["disc_half"]),
        disc_label=(SPIDER_DISC_BASE + np.arange(n_disc)).astype(np.uint16),
        disc_level=level,
        disc_severity=f32(disc_sev),
        hydration=1.0 - 0.6 * disc_deg,
        canal_a=float(canal_a),
        canal_b=float(canal_b),
        canal_v=canal_v,
        trunk=(rng.uniform(140, 175), -45.0, skin_v + 45.0, trunk_fat),
        severity=np.asarray(severity, dtype=np.float64),
        transitional=transitional,
    )
