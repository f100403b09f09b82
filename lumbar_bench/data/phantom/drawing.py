"""Paint tissue classes, SPIDER anatomy labels and lesion zones from local spine coordinates.

Every function takes the local ``(u, v, s)`` of a batch of pixels (see
:func:`~lumbar_bench.data.phantom.anatomy.local_coords`) and paints into three maps of the
same shape: ``cls`` (tissue class, see the ``T_*`` names), ``anat`` (SPIDER values) and
``les`` (``1 + 5 * condition_index + level_index`` inside each condition's true zone).
Later painters overwrite earlier ones, from the trunk inwards to the foramina.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from lumbar_bench.data.phantom.anatomy import (
    KIND_BODY,
    KIND_DISC,
    KIND_SACRUM,
    SPIDER_CANAL,
    Spine,
)

T_AIR, T_MUSCLE, T_FAT, T_MARROW, T_CORTEX, T_ANNULUS, T_CSF, T_NERVE = 0, 1, 2, 3, 4, 5, 6, 7
T_FIBROUS, T_VISCERA, T_VESSEL, T_JOINT = 8, 9, 10, 11
#: Nucleus of disc ``i`` is class ``T_NUCLEUS + i``; marrow of vertebra ``i`` is ``T_VERT + i``.
T_NUCLEUS, T_VERT = 16, 32
N_CLASSES = 48
#: Condition indices in ``CONDITIONS`` order.
C_CANAL, C_LEFT_FORAMEN, C_RIGHT_FORAMEN, C_LEFT_RECESS, C_RIGHT_RECESS = 0, 1, 2, 3, 4


class Maps(NamedTuple):
    """The three painted maps of one batch of pixels."""

    cls: np.ndarray
    anat: np.ndarray
    les: np.ndarray


class Local(NamedTuple):
    """Local coordinates plus the nearest disc and vertebra of each pixel."""

    u: np.ndarray
    v: np.ndarray
    s: np.ndarray
    disc: np.ndarray
    vert: np.ndarray
    narrowing: np.ndarray | None = None


def paint(spine: Spine, u: np.ndarray, v: np.ndarray, s: np.ndarray) -> Maps:
    """Tissue classes, SPIDER labels and lesion zones of pixels at local ``(u, v, s)``."""
    shape = u.shape
    u, v, s = (np.ravel(a).astype(np.float32, copy=False) for a in (u, v, s))
    n = u.size
    maps = Maps(np.zeros(n, np.uint8), np.zeros(n, np.uint16), np.zeros(n, np.uint8))
    _trunk(spine, u, v, s, maps)
    near = (np.abs(u) < 80.0) & (v > -60.0) & (v < spine.canal_v + spine.canal_b + 45.0)
    idx, loc, sub = _within(spine, Local(u, v, s, u, u), maps, near)
    loc = loc._replace(narrowing=_canal_profile(spine, loc))
    _bodies_and_discs(spine, loc, sub)
    _posterior_elements(spine, loc, sub)
    _canal(spine, loc, sub)
    _zone(spine, loc, sub, np.abs(np.abs(loc.u) - spine.recess_centre()[0]) < 5.0, _recesses)
    lateral = (np.abs(loc.u) > spine.canal_a + 1.0) & (np.abs(loc.u) < spine.canal_a + 11.0)
    _zone(spine, loc, sub, lateral & (loc.v > 0.0) & (loc.v < spine.canal_v + 8.0), _foramina)
    _back(maps, idx, sub)
    return Maps(*(m.reshape(shape) for m in maps))


def _within(spine: Spine, loc: Local, maps: Maps, mask: np.ndarray) -> tuple[np.ndarray, Local, Maps]:
    """Select the pixels where ``mask`` holds: their indices, local coordinates and map values."""
    idx = np.flatnonzero(mask)
    u, v, s = loc.u[idx], loc.v[idx], loc.s[idx]
    return (
        idx,
        Local(u, v, s, _nearest(spine.disc_center, s), _nearest(spine.vert_center, s)),
        Maps(*(m[idx] for m in maps)),
    )


def _back(maps: Maps, idx: np.ndarray, sub: Maps) -> None:
    """Write a subset's maps back into the full maps."""
    for full, part in zip(maps, sub, strict=True):
        full[idx] = part


def _zone(spine: Spine, loc: Local, maps: Maps, mask: np.ndarray, painter: Callable[..., None]) -> None:
    """Run ``painter`` on the pixels where ``mask`` holds only."""
    idx, sub_loc, sub = _within(spine, loc, maps, mask)
    painter(spine, sub_loc, sub)
    _back(maps, idx, sub)


def _nearest(centres: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Index of the nearest of sorted ``centres`` for each ``s``."""
    mids = 0.5 * (centres[1:] + centres[:-1])
    return np.searchsorted(mids, s).astype(np.int64)


def _put(maps: Maps, mask: np.ndarray, cls: int | np.ndarray, anat: int | np.ndarray | None = None) -> None:
    """Paint ``cls`` (and ``anat`` when given) where ``mask`` holds; arrays are per pixel."""
    maps.cls[mask] = cls[mask] if isinstance(cls, np.ndarray) else cls
    if anat is not None:
        maps.anat[mask] = anat[mask] if isinstance(anat, np.ndarray) else anat


def _ellipse(x: np.ndarray, y: np.ndarray, rx: float | np.ndarray, ry: float | np.ndarray) -> np.ndarray:
    """``(x / rx)^2 + (y / ry)^2``."""
    return (x / rx) ** 2 + (y / ry) ** 2


def _cube(x: np.ndarray) -> np.ndarray:
    """``x ** 3`` for non-negative ``x`` (a rounded-rectangle exponent, cheaper than ``**``)."""
    return x * x * x


def _trunk(spine: Spine, u: np.ndarray, v: np.ndarray, s: np.ndarray, maps: Maps) -> None:
    """Body wall with subcutaneous fat, muscle, abdominal contents, aorta and vena cava."""
    half_w, centre_v, half_d, fat = spine.trunk
    outer = _ellipse(u, v - centre_v, half_w, half_d) <= 1
    inner = _ellipse(u, v - centre_v, half_w - fat, half_d - fat) <= 1
    _put(maps, outer, T_FAT)
    _put(maps, inner, T_MUSCLE)
    b = float(spine.vert_b[2])
    _put(maps, inner & (v < -(b + 22)) & (np.abs(u) < half_w - fat - 25), T_VISCERA)
    above_bifurcation = s > spine.vert_center[1]
    _put(maps, above_bifurcation & (_ellipse(u - 10.0, v + b + 12, 9.5, 9.5) <= 1), T_VESSEL)
    _put(maps, above_bifurcation & (_ellipse(u + 18.0, v + b + 10, 11.0, 8.0) <= 1), T_VESSEL)
    _put(maps, _ellipse(u, v - spine.canal_v - 1.0, spine.canal_a + 2.5, spine.canal_b + 3.0) <= 1, T_FAT)


def _bodies_and_discs(spine: Spine, loc: Local, maps: Maps) -> None:
    """Vertebral bodies (marrow, cortex), discs (annulus, nucleus, posterior bulge), sacrum."""
    u, v, s = loc.u, loc.v, loc.s
    seg = np.searchsorted(spine.edges, s, side="right")
    kind, label = spine.seg_kind[seg], spine.seg_label[seg]
    a, b, idx = spine.seg_a[seg], spine.seg_b[seg], spine.seg_index[seg]
    lo, hi = spine.edges[np.maximum(seg - 1, 0)], spine.edges[np.minimum(seg, len(spine.edges) - 1)]
    mid, half = 0.5 * (lo + hi), np.maximum(0.5 * (hi - lo), np.float32(1.0))
    au = np.abs(u)
    bulge = _canal_intrusion(spine, loc)[0]
    b_eff = np.where(v > 0, b + 1.6 * bulge, b)
    cross = _cube(au / a) + _cube(np.abs(v) / b_eff)
    disc = (kind == KIND_DISC) & (cross <= 1)
    _put(maps, disc, T_ANNULUS, label.astype(np.uint16))
    nucleus = disc & (_ellipse(u, v + 0.1 * b, 0.5 * a, 0.55 * b) + ((s - mid) / (0.65 * half)) ** 2 <= 1)
    _put(maps, nucleus & (idx >= 0), (T_NUCLEUS + idx).astype(np.uint8))
    q = ((s - mid) / half) ** 2
    q *= q
    r = cross + q * q
    body = (kind == KIND_BODY) & (r <= 1)
    _put(maps, body, np.where(idx >= 0, T_VERT + idx, T_MARROW).astype(np.uint8), label.astype(np.uint16))
    _put(maps, body & (r > 0.72), T_CORTEX)
    sac_a = 26.0 + 22.0 * np.exp(-(((s + 22.0) / 20.0) ** 2))
    sac_b = np.clip(17.0 * (1 + s / 170.0), 5.0, None)
    sacrum = (kind == KIND_SACRUM) & (_cube(au / sac_a) + _cube(np.abs(v - 0.15 * s) / sac_b) <= 1)
    _put(maps, sacrum, T_MARROW, 0)
    _put(maps, sacrum & (s > -3.0), T_CORTEX)


def _posterior_elements(spine: Spine, loc: Local, maps: Maps) -> None:
    """Pedicles, transverse processes, laminae, spinous processes and facet joints."""
    u, v, s, j = loc.u, loc.v, loc.s, loc.vert
    au = np.abs(u)
    ds = s - spine.vert_center[j]
    h, b = spine.vert_half[j], spine.vert_b[j]
    ca, cb, cv = spine.canal_a, spine.canal_b, spine.canal_v
    back = cv + cb
    above_sacrum = s > spine.disc_center[0] - spine.disc_half[0] - 4.0
    marrow = (T_VERT + j).astype(np.uint8)
    label = spine.vert_label[j].astype(np.uint16)
    pedicle = (
        (au > ca + 0.5) & (au < ca + 7) & (v > 0.55 * b) & (v < cv + 1) & (ds > -0.15 * h) & (ds < 0.8 * h)
    )
    transverse = (
        (au > ca + 5) & (au < ca + 28) & (v > 0.7 * b) & (v < 0.7 * b + 7) & (np.abs(ds - 0.2 * h) < 0.25 * h)
    )
    lamina = (au < ca + 8) & (v > back + 1) & (v < back + 7) & (ds > -0.95 * h) & (ds < 0.55 * h)
    tilt = ds + 0.3 * (v - back)
    spinous = (au < 3.5) & (v > back + 3) & (v < back + 28) & (tilt > -0.5 * h) & (tilt < 0.6 * h)
    d = loc.disc
    near_disc = np.abs(s - spine.disc_center[d]) < spine.disc_half[d] + 7.0
    facet = near_disc & (au > ca + 1.5) & (au < ca + 11) & (v > cv - 1) & (v < back + 3)
    bone = (pedicle | transverse | lamina | spinous | facet) & above_sacrum
    _put(maps, bone, marrow, label)
    joint = facet & above_sacrum & (np.abs(au - ca - 6.0) < 0.7) & (v > cv + 1)
    _put(maps, joint, T_JOINT)
    sacral_roof = (s <= spine.disc_center[0] - spine.disc_half[0]) & (s > -60.0) & (au < ca + 8)
    _put(maps, sacral_roof & (v > back + 1) & (v < back + 9), T_MARROW, 0)


def _canal_profile(spine: Spine, loc: Local) -> np.ndarray:
    """Canal narrowing at each pixel: the nearest disc's severity times a bell along ``s``."""
    d = loc.disc
    width = np.maximum(spine.disc_half[d], np.float32(4.0)) + np.float32(2.5)
    return np.exp(-(((loc.s - spine.disc_center[d]) / width) ** 2)) * spine.disc_severity[d, C_CANAL]


def _canal_intrusion(spine: Spine, loc: Local) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anterior (disc bulge), posterior (ligament) and lateral narrowing (mm) at each pixel."""
    g = loc.narrowing if loc.narrowing is not None else _canal_profile(spine, loc)
    return 1.3 * spine.canal_b * g, 0.75 * spine.canal_b * g, 0.35 * spine.canal_a * g


def _canal(spine: Spine, loc: Local, maps: Maps) -> None:
    """Thecal sac (CSF) narrowed at each disc by its canal severity, the cord above the conus."""
    u, v, s = loc.u, loc.v, loc.s
    ca, cv = spine.canal_a, spine.canal_v
    cb = spine.canal_b * np.clip(1 + np.minimum(s, 0) / 60.0, 0.3, 1.0)
    front, back, side = _canal_intrusion(spine, loc)
    zone = (_ellipse(u, v - cv, ca, cb) <= 1) & (s > -40.0)
    centre = cv + 0.5 * (front - back)
    half = cb - 0.5 * (front + back)
    sac = zone & (_ellipse(u, v - centre, ca - side, half) <= 1)
    lost = zone & ~sac
    d = loc.disc
    _put(maps, lost & (v < centre), T_ANNULUS, spine.disc_label[d].astype(np.uint16))
    _put(maps, lost & (v >= centre), T_FIBROUS, 0)
    _put(maps, sac, T_CSF, SPIDER_CANAL)
    cord = sac & (s > spine.vert_center[4]) & (_ellipse(u, v - centre, 0.42 * ca, 0.5 * half) <= 1)
    _put(maps, cord, T_NERVE)
    level = spine.disc_level[d]
    in_level = zone & (level >= 0) & (np.abs(s - spine.disc_center[d]) <= spine.disc_half[d] + 3.0)
    _mark(maps, in_level, C_CANAL, level)


def _mark(maps: Maps, mask: np.ndarray, condition: int, level: np.ndarray) -> None:
    """Lesion value ``1 + 5 * condition + level`` where ``mask`` holds."""
    maps.les[mask] = (1 + 5 * condition + level[mask]).astype(np.uint8)


def _recesses(spine: Spine, loc: Local, maps: Maps) -> None:
    """Lateral recesses (subarticular zones), narrowed by facet and ligament hypertrophy."""
    u, v, s, d = loc.u, loc.v, loc.s, loc.disc
    cu, cv = spine.recess_centre()
    ru, rv = 4.5, 3.8
    rs = spine.disc_half[d] + 5.0
    ds2 = ((s - spine.disc_center[d]) / rs) ** 2
    level = spine.disc_level[d]
    for side, cond in ((1.0, C_LEFT_RECESS), (-1.0, C_RIGHT_RECESS)):
        sigma = spine.disc_severity[d, cond]
        zone = _ellipse(u - side * cu, v - cv, ru, rv) + ds2 <= 1
        shrink = 1.0 - 0.75 * sigma
        iu, iv = side * (cu - 1.5 * sigma), cv - 1.0 * sigma
        inner = zone & (_ellipse(u - iu, v - iv, ru * shrink, rv * shrink) + ds2 <= 1)
        _put(maps, zone, T_FIBROUS, 0)
        _put(maps, inner, T_CSF, SPIDER_CANAL)
        root = zone & (_ellipse(u - iu, v - iv + 0.5, 1.3, 1.3) <= 1)
        _put(maps, root, T_NERVE, SPIDER_CANAL)
        _mark(maps, zone & (level >= 0), cond, level)


def _foramina(spine: Spine, loc: Local, maps: Maps) -> None:
    """Neural foramina: fat around the exiting root, shrunk by disc/facet encroachment."""
    u, v, s, d = loc.u, loc.v, loc.s, loc.disc
    ca = spine.canal_a
    geo = np.array([spine.foramen_centre(i) for i in range(len(spine.disc_center))])
    sc, sr, vc, vr = geo[d, 0], geo[d, 1], geo[d, 2], geo[d, 3]
    t = np.clip((s - sc) / sr, -1.0, 1.0)
    vr_s = vr * (0.75 + 0.25 * t)
    au = np.abs(u)
    lateral = (au > ca + 1.0) & (au < ca + 11.0)
    level = spine.disc_level[d]
    for side, cond in ((1.0, C_LEFT_FORAMEN), (-1.0, C_RIGHT_FORAMEN)):
        on_side = lateral & (u * side > 0)
        sigma = spine.disc_severity[d, cond]
        zone = on_side & (_ellipse(v - vc, s - sc, vr_s, sr) <= 1)
        fv, fs = 1.0 - 0.8 * sigma, 1.0 - 0.55 * sigma
        inner = zone & (_ellipse(v - vc - 0.8 * sigma, s - sc - 0.3 * sigma * sr, vr_s * fv, sr * fs) <= 1)
        _put(maps, zone, T_FIBROUS, 0)
        _put(maps, inner, T_FAT, 0)
        root = zone & (_ellipse(v - vc + 0.5, s - sc - 0.45 * sr, 2.2, 2.6) <= 1)
        _put(maps, root, T_NERVE, 0)
        _mark(maps, zone & (level >= 0), cond, level)
