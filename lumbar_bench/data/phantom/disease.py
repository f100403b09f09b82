"""The joint disease model: one patient's 25 true grades, correlated the way real ones are.

Every label (condition ``c`` at level ``l``) has a standard-normal latent degeneration

    z[c, l] = √a[l]·P + √b[l]·V[l] + λ[c, l]·G[g(c), l] + σ[c, l]·ε[c, l]

- ``P`` is the patient's degeneration, shared by every label;
- ``V`` is the level's degeneration, an AR(1) chain over the levels, so neighbouring levels
  correlate more than distant ones;
- ``G`` is a per-level factor of each compartment: ``foraminal`` (both foramina) or
  ``central`` (the spinal canal and both lateral recesses);
- ``ε`` is the label's own part, and ``σ`` makes the variance 1.

A grade is its latent cut at two thresholds, and the observed label is that grade moved by
the label noise (``pathology.observe``). Both are solved from the reference figures
(``reference``), per level:

- the thresholds, so that the *observed* grades' marginals are closest to the real ones
  (the noise itself moves a few per cent of the labels; ``true_prior``);
- the loadings, so that the observed grades' expected Pearson correlations equal the real
  table. The latent correlation giving a target code correlation is found by bisection on
  exact bivariate-normal cell probabilities, passed through the noise matrix.

The same latent sets each label's drawn narrowing, so the images follow the labels: where a
level is diseased on both sides, both sides show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from statistics import NormalDist

import numpy as np

from lumbar_bench.constants import CONDITIONS, LABEL_COLUMNS, LEVELS, SCORE_GROUPS
from lumbar_bench.data.phantom import reference
from lumbar_bench.data.phantom.pathology import narrowing, noise_matrix

#: Latent correlation of two labels at one level that is not compartment-specific (at most).
BASE = 0.35
#: Share of ``BASE`` carried by the patient factor (the rest by the level factor).
PATIENT_SHARE = 0.5
#: AR(1) coefficient of the level factor between neighbouring levels.
PHI = 0.6
#: Compartment of each condition (index into the two per-level compartment factors).
COMPARTMENT = (1, 0, 0, 1, 1)
#: Grid step of the simplex search in ``true_prior``.
_GRID = 0.002


@dataclass(frozen=True)
class JointModel:
    """Thresholds and loadings of the latent model (arrays in ``CONDITIONS`` x ``LEVELS`` shape)."""

    cuts: np.ndarray  # (25, 2): moderate-or-worse, severe; LABEL_COLUMNS order
    patient: np.ndarray  # (5,) √a per level
    level: np.ndarray  # (5,) √b per level
    compartment: np.ndarray  # (5, 5) λ per condition and level
    own: np.ndarray  # (5, 5) σ per condition and level
    phi: float = PHI

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """One patient: true codes ``(25,)``, narrowing amounts ``(25,)`` and degeneration ``P``."""
        patient = float(rng.standard_normal())
        steps = rng.standard_normal(len(LEVELS))
        level = np.empty(len(LEVELS))
        level[0] = steps[0]
        for i in range(1, len(LEVELS)):
            level[i] = self.phi * level[i - 1] + np.sqrt(1.0 - self.phi**2) * steps[i]
        factors = rng.standard_normal((2, len(LEVELS)))[list(COMPARTMENT)]
        own = rng.standard_normal((len(CONDITIONS), len(LEVELS)))
        latent = self.patient * patient + self.level * level + self.compartment * factors + self.own * own
        flat = latent.reshape(-1)
        codes = (flat > self.cuts[:, 0]).astype(np.int64) + (flat > self.cuts[:, 1])
        return codes, narrowing(flat, codes, self.cuts), patient


def reference_prior() -> np.ndarray:
    """``(25, 3)`` real severity frequencies in ``LABEL_COLUMNS`` order, rows summing to 1."""
    group_of = {c: g for g, members in SCORE_GROUPS.items() for c in members}
    rows = [reference.PRIOR[group_of[c]][i] for c in CONDITIONS for i in range(len(LEVELS))]
    table = np.asarray(rows, dtype=np.float64)
    return table / table.sum(axis=1, keepdims=True)


@cache
def true_prior(label_noise: float) -> np.ndarray:
    """``(25, 3)`` true-grade frequencies whose noisy observation is closest (L1) to the real ones."""
    step = np.arange(0.0, 1.0 + _GRID / 2, _GRID)
    p0, p2 = np.meshgrid(step, step, indexing="ij")
    keep = p0 + p2 <= 1.0 + 1e-12
    grid = np.stack([p0[keep], np.clip(1.0 - p0[keep] - p2[keep], 0.0, 1.0), p2[keep]], axis=1)
    observed = grid @ noise_matrix(label_noise)
    rows, inverse = np.unique(reference_prior(), axis=0, return_inverse=True)
    best = [
        grid[int(np.argmin(np.abs(observed - row).sum(axis=1) + 1e-3 * np.abs(grid - row).sum(axis=1)))]
        for row in rows
    ]
    return np.asarray(best)[inverse.reshape(-1)]


def thresholds(prior: np.ndarray) -> np.ndarray:
    """Latent cut points ``(n, 2)`` (moderate-or-worse, severe) of severity frequencies ``(n, 3)``."""
    nd = NormalDist()
    at_least = np.clip(prior[:, 1] + prior[:, 2], 1e-9, 1 - 1e-9)
    severe = np.clip(prior[:, 2], 1e-9, 1 - 1e-9)
    return np.array([[nd.inv_cdf(1 - a), nd.inv_cdf(1 - b)] for a, b in zip(at_least, severe, strict=True)])


@cache
def _gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(64)


def bivariate_cdf(x: np.ndarray, y: np.ndarray, rho: float) -> np.ndarray:
    """``P(X <= x, Y <= y)`` of a standard bivariate normal with correlation ``rho`` (finite x, y).

    Plackett's identity, ``Φ2(x, y; ρ) = Φ(x)Φ(y) + ∫_0^ρ φ2(x, y; r) dr``, integrated with
    64-point Gauss-Legendre; exact to about 1e-9 for ``|ρ| <= 0.995``.
    """
    nodes, weights = _gauss_legendre()
    r = 0.5 * rho * (nodes + 1.0)
    x, y = np.asarray(x, dtype=np.float64)[..., None], np.asarray(y, dtype=np.float64)[..., None]
    one_minus = 1.0 - r**2
    density = np.exp(-(x**2 - 2.0 * r * x * y + y**2) / (2.0 * one_minus)) / (
        2.0 * np.pi * np.sqrt(one_minus)
    )
    cdf = np.vectorize(NormalDist().cdf)
    return cdf(x[..., 0]) * cdf(y[..., 0]) + 0.5 * rho * (density * weights).sum(axis=-1)


def code_correlation(cuts_x: np.ndarray, cuts_y: np.ndarray, rho: float, label_noise: float) -> float:
    """Expected Pearson correlation of two observed labels whose latents correlate at ``rho``."""
    big = 40.0  # stands in for +inf: Φ(40) is 1 in double precision
    edges_x = np.array([-big, *cuts_x, big])
    edges_y = np.array([-big, *cuts_y, big])
    cdf = bivariate_cdf(edges_x[:, None], edges_y[None, :], rho)
    cells = np.clip(np.diff(np.diff(cdf, axis=0), axis=1), 0.0, None)
    noise = noise_matrix(label_noise)
    joint = noise.T @ (cells / cells.sum()) @ noise
    codes = np.arange(3.0)
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    mx, my = px @ codes, py @ codes
    sx, sy = np.sqrt(px @ codes**2 - mx**2), np.sqrt(py @ codes**2 - my**2)
    return float((codes @ joint @ codes - mx * my) / (sx * sy))


def latent_for(cuts_x: np.ndarray, cuts_y: np.ndarray, target: float, label_noise: float) -> float:
    """The latent correlation whose observed code correlation is ``target`` (bisection)."""
    lo, hi = 0.0, 0.995
    if code_correlation(cuts_x, cuts_y, hi, label_noise) <= target:
        return hi
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if code_correlation(cuts_x, cuts_y, mid, label_noise) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _row(condition: str, level: int) -> int:
    return LABEL_COLUMNS.index(f"{condition}_{LEVELS[level]}")


def _level_loadings(cuts: np.ndarray, level: int, label_noise: float) -> tuple[float, np.ndarray]:
    """``(base, λ per condition)`` at one level, from the reference correlations."""
    targets = {}
    for name, (cx, cy) in reference.CORRELATION_PAIRS.items():
        wanted = reference.CORRELATIONS[name][level]
        targets[name] = latent_for(cuts[_row(cx, level)], cuts[_row(cy, level)], wanted, label_noise)
    r_for = targets["left~right foraminal"]
    r_sub = targets["left~right subarticular"]
    r_cen = targets["spinal~left subarticular"]
    base = min(BASE, 0.8 * min(r_for, r_sub, r_cen))
    lam_sub = np.sqrt(r_sub - base)
    lam_spinal = min((r_cen - base) / lam_sub, 0.999 * np.sqrt(1.0 - base))
    lam_for = np.sqrt(r_for - base)
    return base, np.array([lam_spinal, lam_for, lam_for, lam_sub, lam_sub])


@cache
def joint_model(label_noise: float) -> JointModel:
    """The model whose observed labels match the reference marginals and correlations."""
    cuts = thresholds(true_prior(label_noise))
    bases, lams = zip(*(_level_loadings(cuts, lv, label_noise) for lv in range(len(LEVELS))), strict=True)
    base = np.asarray(bases)
    compartment = np.stack(lams, axis=1)  # (conditions, levels)
    own = np.sqrt(np.clip(1.0 - base[None, :] - compartment**2, 0.0, None))
    return JointModel(
        cuts=cuts,
        patient=np.sqrt(PATIENT_SHARE * base),
        level=np.sqrt((1.0 - PATIENT_SHARE) * base),
        compartment=compartment,
        own=own,
    )


def expected_correlations(model: JointModel, label_noise: float) -> dict[str, list[float]]:
    """The model's expected observed-code correlation for each reference pair and level."""
    out: dict[str, list[float]] = {}
    for name, (cx, cy) in reference.CORRELATION_PAIRS.items():
        ix, iy = CONDITIONS.index(cx), CONDITIONS.index(cy)
        out[name] = []
        for lv in range(len(LEVELS)):
            base = model.patient[lv] ** 2 + model.level[lv] ** 2
            rho = base + model.compartment[ix, lv] * model.compartment[iy, lv] * (
                COMPARTMENT[ix] == COMPARTMENT[iy]
            )
            out[name].append(
                code_correlation(model.cuts[_row(cx, lv)], model.cuts[_row(cy, lv)], rho, label_noise)
            )
    return out
