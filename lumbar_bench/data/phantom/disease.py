"""The joint disease model: one patient's 25 true grades, correlated the way real ones are.

Every label (condition ``c`` at level ``l``) has a standard-normal latent degeneration

    z[c, l] = √a[l]·P + √b[l]·V[l] + λ[c, l]·G[g(c), l] + β[c, l]·U[c, l] + σ[c, l]·ε[c, l]

- ``P`` is the patient's degeneration, shared by every label;
- ``V`` is the level's degeneration, an AR(1) chain over the levels (coefficient ``PHI``)
  shared by every condition, so neighbouring levels correlate more than distant ones;
- ``G`` is each compartment's chain over the levels: ``foraminal`` (both foramina) or
  ``central`` (the spinal canal and both lateral recesses); it carries the compartment's
  within-level correlation (left~right, spinal~subarticular) and part of its level-to-level one;
- ``U`` is each condition's own chain over the levels, which carries the rest of the
  level-to-level correlation of that condition;
- ``ε`` is the label's own part, and ``σ`` makes the variance 1.

The chains ``G`` and ``U`` are AR(1) with a coefficient per step (L1/L2->L2/L3, ...), so each
keeps unit variance. A grade is its latent cut at two thresholds; the reader who writes
``train.csv`` sees the latent with an error and cuts at thresholds scaled to keep the
marginals (``pathology.observe``). Everything is solved from the reference figures
(``reference``):

- the thresholds, from the real marginals (the reader keeps them, so true and observed
  grades have the same frequencies);
- the loadings and the chains' coefficients, so that the observed grades' expected Pearson
  correlations equal the real tables, within a level and between neighbouring levels. The
  reader's error scales every latent correlation by ``1 / (1 + noise²)``; the latent
  correlation giving a target code correlation is found by bisection on exact
  bivariate-normal cell probabilities.

The same latent sets each label's drawn narrowing, so the images follow the labels: where a
level is diseased on both sides, both sides show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.special import ndtr, ndtri

from lumbar_bench.constants import CONDITIONS, LABEL_COLUMNS, LEVELS, SCORE_GROUPS
from lumbar_bench.data.phantom import reference
from lumbar_bench.data.phantom.pathology import grade, narrowing

#: Latent correlation of two labels at one level that is not compartment-specific (at most).
BASE = 0.35
#: Share of ``BASE`` carried by the patient factor (the rest by the level factor).
PATIENT_SHARE = 0.5
#: AR(1) coefficient of the shared level factor between neighbouring levels.
PHI = 0.6
#: Compartment of each condition (index into the two compartment chains).
COMPARTMENT = (1, 0, 0, 1, 1)
#: Share of a label's remaining variance (after the shared and compartment parts) carried by
#: its condition's chain; the rest is the label's own.
CHAIN_SHARE = 0.85
#: Largest chain coefficient a fit may use.
MAX_PHI = 0.99


@dataclass(frozen=True)
class Patient:
    """One patient's true codes, drawn narrowing and latents ``(25,)``, and degeneration ``P``."""

    codes: np.ndarray
    amounts: np.ndarray
    latent: np.ndarray
    degeneration: float


@dataclass(frozen=True)
class JointModel:
    """Thresholds, loadings and chain coefficients of the latent model.

    Loadings are ``(conditions, levels)`` arrays; chain coefficients ``(chains, levels - 1)``.
    """

    cuts: np.ndarray  # (25, 2): moderate-or-worse, severe; LABEL_COLUMNS order
    patient: np.ndarray  # (5,) √a per level
    level: np.ndarray  # (5,) √b per level
    compartment: np.ndarray  # (5, 5) λ per condition and level
    compartment_phi: np.ndarray  # (2, 4) per compartment and step
    chain: np.ndarray  # (5, 5) β per condition and level
    chain_phi: np.ndarray  # (5, 4) per condition and step
    own: np.ndarray  # (5, 5) σ per condition and level

    def sample(self, rng: np.random.Generator) -> Patient:
        """One patient drawn from the model."""
        patient = float(rng.standard_normal())
        level = ar1_chains(rng, np.full((1, len(LEVELS) - 1), PHI))[0]
        compartments = ar1_chains(rng, self.compartment_phi)[list(COMPARTMENT)]
        chains = ar1_chains(rng, self.chain_phi)
        own = rng.standard_normal((len(CONDITIONS), len(LEVELS)))
        latent = (
            self.patient * patient
            + self.level * level
            + self.compartment * compartments
            + self.chain * chains
            + self.own * own
        ).reshape(-1)
        codes = grade(latent, self.cuts)
        return Patient(codes, narrowing(latent, codes, self.cuts), latent, patient)


def ar1_chains(rng: np.random.Generator, phis: np.ndarray) -> np.ndarray:
    """Unit-variance AR(1) chains ``(k, steps + 1)`` with one coefficient per chain and step."""
    phis = np.asarray(phis, dtype=np.float64)
    steps = rng.standard_normal((phis.shape[0], phis.shape[1] + 1))
    out = np.empty_like(steps)
    out[:, 0] = steps[:, 0]
    for i in range(phis.shape[1]):
        out[:, i + 1] = phis[:, i] * out[:, i] + np.sqrt(1.0 - phis[:, i] ** 2) * steps[:, i + 1]
    return out


def reference_prior() -> np.ndarray:
    """``(25, 3)`` real severity frequencies in ``LABEL_COLUMNS`` order, rows summing to 1."""
    group_of = {c: g for g, members in SCORE_GROUPS.items() for c in members}
    rows = [reference.PRIOR[group_of[c]][i] for c in CONDITIONS for i in range(len(LEVELS))]
    table = np.asarray(rows, dtype=np.float64)
    return table / table.sum(axis=1, keepdims=True)


def thresholds(prior: np.ndarray) -> np.ndarray:
    """Latent cut points ``(n, 2)`` (moderate-or-worse, severe) of severity frequencies ``(n, 3)``."""
    at_least = np.clip(prior[:, 1] + prior[:, 2], 1e-9, 1 - 1e-9)
    severe = np.clip(prior[:, 2], 1e-9, 1 - 1e-9)
    return np.stack([ndtri(1 - at_least), ndtri(1 - severe)], axis=1)


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
    return ndtr(x[..., 0]) * ndtr(y[..., 0]) + 0.5 * rho * (density * weights).sum(axis=-1)


def code_correlation(cuts_x: np.ndarray, cuts_y: np.ndarray, rho: float) -> float:
    """Expected Pearson correlation of two codes whose standard-normal latents correlate at ``rho``."""
    big = 40.0  # stands in for +inf: Φ(40) is 1 in double precision
    edges_x = np.array([-big, *cuts_x, big])
    edges_y = np.array([-big, *cuts_y, big])
    cdf = bivariate_cdf(edges_x[:, None], edges_y[None, :], rho)
    joint = np.clip(np.diff(np.diff(cdf, axis=0), axis=1), 0.0, None)
    joint /= joint.sum()
    codes = np.arange(3.0)
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    mx, my = px @ codes, py @ codes
    sx, sy = np.sqrt(px @ codes**2 - mx**2), np.sqrt(py @ codes**2 - my**2)
    return float((codes @ joint @ codes - mx * my) / (sx * sy))


def observed_correlation(cuts_x: np.ndarray, cuts_y: np.ndarray, rho: float, reader_noise: float) -> float:
    """Expected correlation of two *observed* codes whose true latents correlate at ``rho``.

    The reader's errors are independent, so what they see correlates at ``rho / (1 + noise²)``
    and is cut at the true thresholds' quantiles.
    """
    return code_correlation(cuts_x, cuts_y, rho / (1.0 + reader_noise**2))


def latent_for(cuts_x: np.ndarray, cuts_y: np.ndarray, target: float, reader_noise: float) -> float:
    """The true latent correlation whose observed code correlation is ``target`` (bisection)."""
    lo, hi = 0.0, 0.995
    if observed_correlation(cuts_x, cuts_y, hi, reader_noise) <= target:
        return hi
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if observed_correlation(cuts_x, cuts_y, mid, reader_noise) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _row(condition: str, level: int) -> int:
    return LABEL_COLUMNS.index(f"{condition}_{LEVELS[level]}")


def _level_loadings(cuts: np.ndarray, level: int, reader_noise: float) -> tuple[float, np.ndarray]:
    """``(base, λ per condition)`` at one level, from the reference within-level correlations."""
    targets = {}
    for name, (cx, cy) in reference.CORRELATION_PAIRS.items():
        wanted = reference.CORRELATIONS[name][level]
        targets[name] = latent_for(cuts[_row(cx, level)], cuts[_row(cy, level)], wanted, reader_noise)
    r_for = targets["left~right foraminal"]
    r_sub = targets["left~right subarticular"]
    r_cen = targets["spinal~left subarticular"]
    base = min(BASE, 0.8 * min(r_for, r_sub, r_cen))
    lam_sub = np.sqrt(r_sub - base)
    lam_spinal = min((r_cen - base) / lam_sub, 0.999 * np.sqrt(1.0 - base))
    lam_for = np.sqrt(r_for - base)
    return base, np.array([lam_spinal, lam_for, lam_for, lam_sub, lam_sub])


def _chain_coefficients(
    cuts: np.ndarray, shared: np.ndarray, lam: np.ndarray, beta: np.ndarray, reader_noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-step coefficients of the compartment and condition chains, from the level-to-level table.

    ``shared`` ``(steps,)`` is the correlation the patient and level factors already give two
    neighbouring levels; each condition needs the rest from its compartment's chain and its own.
    Per compartment and step, the compartment coefficient is the one on a fine grid whose
    condition coefficients (each making up its condition's difference, within ``±MAX_PHI``)
    miss the targets least, then lie closest to it (the chains persist alike where they can).
    """
    steps = len(LEVELS) - 1
    need = np.array(
        [
            [
                latent_for(
                    cuts[_row(c, s)], cuts[_row(c, s + 1)], reference.LEVEL_CORRELATIONS[c][s], reader_noise
                )
                - shared[s]
                for s in range(steps)
            ]
            for c in CONDITIONS
        ]
    )
    lam_pair, beta_pair = lam[:, :-1] * lam[:, 1:], beta[:, :-1] * beta[:, 1:]
    grid = np.linspace(0.0, MAX_PHI, 199)
    compartment_phi = np.zeros((2, steps))
    for g in range(2):
        members = np.array(COMPARTMENT) == g
        for s in range(steps):
            rest = need[members, s, None] - lam_pair[members, s, None] * grid  # (members, grid)
            phi = (rest / np.maximum(beta_pair[members, s, None], 1e-12)).clip(-MAX_PHI, MAX_PHI)
            miss = np.abs(rest - phi * beta_pair[members, s, None]).sum(axis=0)
            spread = ((phi - grid) ** 2).sum(axis=0)
            compartment_phi[g, s] = grid[np.lexsort((spread, np.round(miss, 9)))[0]]
    rest = need - lam_pair * compartment_phi[list(COMPARTMENT)]
    chain_phi = (rest / np.maximum(beta_pair, 1e-12)).clip(-MAX_PHI, MAX_PHI)
    return compartment_phi, chain_phi


@cache
def joint_model(reader_noise: float) -> JointModel:
    """The model whose observed labels match the reference marginals and correlations."""
    cuts = thresholds(reference_prior())
    bases, lams = zip(*(_level_loadings(cuts, lv, reader_noise) for lv in range(len(LEVELS))), strict=True)
    base = np.asarray(bases)
    compartment = np.stack(lams, axis=1)  # (conditions, levels)
    rest = np.clip(1.0 - base[None, :] - compartment**2, 0.0, None)
    chain = np.sqrt(CHAIN_SHARE * rest)
    patient, level = np.sqrt(PATIENT_SHARE * base), np.sqrt((1.0 - PATIENT_SHARE) * base)
    shared = patient[:-1] * patient[1:] + PHI * level[:-1] * level[1:]
    compartment_phi, chain_phi = _chain_coefficients(cuts, shared, compartment, chain, reader_noise)
    return JointModel(
        cuts=cuts,
        patient=patient,
        level=level,
        compartment=compartment,
        compartment_phi=compartment_phi,
        chain=chain,
        chain_phi=chain_phi,
        own=np.sqrt((1.0 - CHAIN_SHARE) * rest),
    )


def _latent_within(model: JointModel, ix: int, iy: int, lv: int) -> float:
    """Latent correlation of conditions ``ix`` and ``iy`` at level ``lv``."""
    same = COMPARTMENT[ix] == COMPARTMENT[iy]
    rho = model.patient[lv] ** 2 + model.level[lv] ** 2
    return float(rho + model.compartment[ix, lv] * model.compartment[iy, lv] * same)


def _latent_between(model: JointModel, ic: int, s: int) -> float:
    """Latent correlation of condition ``ic`` at levels ``s`` and ``s + 1``."""
    return float(
        model.patient[s] * model.patient[s + 1]
        + PHI * model.level[s] * model.level[s + 1]
        + model.compartment_phi[COMPARTMENT[ic], s] * model.compartment[ic, s] * model.compartment[ic, s + 1]
        + model.chain_phi[ic, s] * model.chain[ic, s] * model.chain[ic, s + 1]
    )


def expected_correlations(model: JointModel, reader_noise: float) -> dict[str, list[float]]:
    """The model's expected observed-code correlation for each within-level reference pair and level."""
    out: dict[str, list[float]] = {}
    for name, (cx, cy) in reference.CORRELATION_PAIRS.items():
        ix, iy = CONDITIONS.index(cx), CONDITIONS.index(cy)
        out[name] = [
            observed_correlation(
                model.cuts[_row(cx, lv)],
                model.cuts[_row(cy, lv)],
                _latent_within(model, ix, iy, lv),
                reader_noise,
            )
            for lv in range(len(LEVELS))
        ]
    return out


def expected_level_correlations(model: JointModel, reader_noise: float) -> dict[str, list[float]]:
    """The model's expected observed-code correlation of each condition between neighbouring levels."""
    return {
        c: [
            observed_correlation(
                model.cuts[_row(c, s)],
                model.cuts[_row(c, s + 1)],
                _latent_between(model, ic, s),
                reader_noise,
            )
            for s in range(len(LEVELS) - 1)
        ]
        for ic, c in enumerate(CONDITIONS)
    }
