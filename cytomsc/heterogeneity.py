"""Heterogeneity of a culture: how many populations its live single cells form, and how they differ.

Why this exists: a culture can pass the ISCT criteria and still be a mixture (CD90-dim cells, small
cells ...). Forcing a number of clusters (FlowSOM, k-means) always finds that many, so the method
here chooses k itself and must be able to say "one population".

Method (``PopulationFinder``), validated in docs/heterogeneity-validation.md:

1. Input (chosen by the pipeline): the positive markers on the logicle scale and log10 FSC-A /
   SSC-A. Negative markers stay out: in a culture that passes they are background, and their
   skewed, correlated compensation spread would otherwise be "found" as populations. Every channel
   is centred on its median and divided by its robust spread (IQR / 1.349); events beyond
   ``trim`` robust SDs in any channel are left out of the fit (and assigned afterwards).
   Cell size is log-normal on some instruments and nearer Gaussian on the linear scale on
   others, and a Gaussian mixture on the wrong scale splits one skewed population into several.
   So the scatter channels' scale is chosen per culture among Box-Cox powers of the linear value
   (0 = log, 0.5, 1 = linear), jointly with the populations: step 2 is run on a small subsample
   for each power and the one with the lowest BIC, Jacobian included, is kept (flowClust's
   Box-Cox idea, Lo et al. 2008, restricted to the channels where the physics is in doubt).
2. A Gaussian mixture with one shared (tied) covariance is grown by greedy splitting: from one
   component, each component is cut in two along each channel and the main axis at its 5th,
   50th and 95th percentiles, EM runs from every cut on a search subsample, the best is refined on
   the fitting subsample, and the split is kept while BIC improves. The outer cuts find a
   population of a few percent that k-means starts miss; the tied covariance keeps the price of a
   population at d + 1 parameters, so BIC can afford a real 5 % population and cannot afford to
   model one population's shape with two.
3. Components under ``min_fraction`` are not populations: they are folded into the component
   their events are otherwise closest to.
4. Stability: the mixture is refitted (warm start) on ``n_bootstrap`` bootstrap resamples; a
   population whose Jaccard agreement with itself falls under ``min_stability`` on average
   (Hennig 2007) is merged into the population it is most confused with. The same resamples give
   each fraction's 95 % percentile interval.

Everything random draws from ``numpy.random.Generator`` seeded by ``random_state``; there is no
global state, so results do not depend on how many processes run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from cytomsc.channels import scatter_family
from cytomsc.errors import CytomscError
from cytomsc.results import Bimodality, HeterogeneityResult, Population

METHOD = "tied-gmm greedy-split BIC, scatter scale by BIC + bootstrap stability"

# --------------------------------------------------------------------------------------------
# Hartigan's dip test
# --------------------------------------------------------------------------------------------

# Null distribution of sqrt(n) * dip for the uniform (the least favourable unimodal law,
# Hartigan & Hartigan 1985), simulated once: 5,000 samples per n, numpy default_rng(20261127),
# with ``dip_statistic`` below. Rows are the quantiles at _DIP_NULL_PROBS.
_DIP_NULL_PROBS = (
    0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
    0.85, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999,
)
_DIP_NULL = {  # n -> quantiles of sqrt(n) * dip at _DIP_NULL_PROBS
    10: (
        0.1581, 0.2268, 0.2464, 0.2595, 0.2711, 0.2794, 0.2867, 0.2926, 0.2982, 0.3035,
        0.3087, 0.3139, 0.3221, 0.3343, 0.3476, 0.3604, 0.3752, 0.3921, 0.4135, 0.4402,
        0.4652, 0.5018, 0.5258, 0.5550
    ),
    20: (
        0.1808, 0.2340, 0.2527, 0.2654, 0.2760, 0.2849, 0.2938, 0.3020, 0.3100, 0.3187,
        0.3278, 0.3364, 0.3460, 0.3569, 0.3674, 0.3794, 0.3929, 0.4108, 0.4329, 0.4696,
        0.5005, 0.5304, 0.5595, 0.6103
    ),
    50: (
        0.1806, 0.2494, 0.2665, 0.2790, 0.2904, 0.2997, 0.3089, 0.3187, 0.3276, 0.3363,
        0.3453, 0.3558, 0.3658, 0.3779, 0.3894, 0.4018, 0.4168, 0.4360, 0.4606, 0.5017,
        0.5348, 0.5813, 0.6043, 0.6596
    ),
    100: (
        0.1943, 0.2580, 0.2754, 0.2876, 0.2978, 0.3079, 0.3170, 0.3264, 0.3364, 0.3466,
        0.3557, 0.3658, 0.3764, 0.3880, 0.3992, 0.4129, 0.4286, 0.4485, 0.4746, 0.5144,
        0.5482, 0.5902, 0.6168, 0.6564
    ),
    200: (
        0.1810, 0.2591, 0.2797, 0.2924, 0.3030, 0.3142, 0.3248, 0.3345, 0.3433, 0.3527,
        0.3627, 0.3715, 0.3809, 0.3927, 0.4046, 0.4180, 0.4345, 0.4526, 0.4789, 0.5218,
        0.5575, 0.6004, 0.6290, 0.7122
    ),
    500: (
        0.1980, 0.2663, 0.2832, 0.2970, 0.3089, 0.3191, 0.3281, 0.3372, 0.3470, 0.3567,
        0.3676, 0.3773, 0.3880, 0.3989, 0.4125, 0.4274, 0.4448, 0.4648, 0.4900, 0.5321,
        0.5665, 0.6133, 0.6464, 0.7091
    ),
    1000: (
        0.1984, 0.2705, 0.2869, 0.3024, 0.3128, 0.3228, 0.3322, 0.3411, 0.3509, 0.3607,
        0.3698, 0.3805, 0.3892, 0.3992, 0.4120, 0.4269, 0.4434, 0.4642, 0.4861, 0.5244,
        0.5650, 0.6091, 0.6393, 0.7085
    ),
    2000: (
        0.2010, 0.2730, 0.2909, 0.3044, 0.3160, 0.3263, 0.3369, 0.3458, 0.3549, 0.3639,
        0.3726, 0.3828, 0.3933, 0.4057, 0.4197, 0.4351, 0.4524, 0.4709, 0.4982, 0.5396,
        0.5786, 0.6239, 0.6472, 0.7040
    ),
}

DIP_SUBSAMPLE = 2000  # events per dip test: large n would make every shoulder "significant"
DIP_ALPHA = 0.05


def dip_statistic(x: np.ndarray) -> float:
    """Hartigan's dip: sup distance between the ECDF and the closest unimodal CDF.

    A port of Hartigan's AS 217 algorithm (as in R's ``diptest``): greatest convex minorant and
    least concave majorant, narrowed until the modal interval stops changing. Ranges from
    1/(2n) (perfectly unimodal) to 0.25 (two equal point masses).
    """
    xs_arr = np.sort(np.asarray(x, dtype=float).ravel())
    n = xs_arr.size
    if n < 2 or xs_arr[0] == xs_arr[-1]:
        return 0.5 / max(n, 1)
    # Ties make the hull slopes undefined; spread them by far less than any real difference.
    if np.any(np.diff(xs_arr) == 0):
        span = xs_arr[-1] - xs_arr[0]
        xs_arr = xs_arr + np.arange(n) * (span * 1e-12)
    xs = [0.0] + xs_arr.tolist()  # 1-based, as in the published algorithm
    mn = [0] * (n + 1)
    mj = [0] * (n + 1)
    mn[1] = 1
    for j in range(2, n + 1):
        mn[j] = j - 1
        while True:
            a = mn[j]
            b = mn[a]
            if a == 1 or (xs[j] - xs[a]) * (a - b) < (xs[a] - xs[b]) * (j - a):
                break
            mn[j] = b
    mj[n] = n
    for k in range(n - 1, 0, -1):
        mj[k] = k + 1
        while True:
            a = mj[k]
            b = mj[a]
            if a == n or (xs[k] - xs[a]) * (a - b) < (xs[a] - xs[b]) * (k - a):
                break
            mj[k] = b
    low, high = 1, n
    dip = 1.0
    gcm = [0] * (n + 2)
    lcm = [0] * (n + 2)
    while True:
        gcm[1] = high
        i = 1
        while gcm[i] > low:
            gcm[i + 1] = mn[gcm[i]]
            i += 1
        ig = l_gcm = i
        ix = ig - 1
        lcm[1] = low
        i = 1
        while lcm[i] < high:
            lcm[i + 1] = mj[lcm[i]]
            i += 1
        ih = l_lcm = i
        iv = 2
        d = 0.0
        if l_gcm != 2 or l_lcm != 2:
            while True:
                gx = gcm[ix]
                lv = lcm[iv]
                if gx > lv:
                    g1 = gcm[ix + 1]
                    dx = (lv - g1 + 1) - (xs[lv] - xs[g1]) * (gx - g1) / (xs[gx] - xs[g1])
                    iv += 1
                    if dx >= d:
                        d, ig, ih = dx, ix + 1, iv - 1
                else:
                    l1 = lcm[iv - 1]
                    dx = (xs[gx] - xs[l1]) * (lv - l1) / (xs[lv] - xs[l1]) - (gx - l1 - 1)
                    ix -= 1
                    if dx >= d:
                        d, ig, ih = dx, ix + 1, iv
                ix = max(ix, 1)
                iv = min(iv, l_lcm)
                if gcm[ix] == lcm[iv]:
                    break
        else:
            d = 1.0
        if d < dip:
            break
        dip_l = 0.0
        for j in range(ig, l_gcm):
            jb, je = gcm[j + 1], gcm[j]
            best = 1.0
            if je - jb > 1 and xs[je] != xs[jb]:
                c = (je - jb) / (xs[je] - xs[jb])
                for jj in range(jb, je + 1):
                    best = max(best, (jj - jb + 1) - (xs[jj] - xs[jb]) * c)
            dip_l = max(dip_l, best)
        dip_u = 0.0
        for j in range(ih, l_lcm):
            jb, je = lcm[j], lcm[j + 1]
            best = 1.0
            if je - jb > 1 and xs[je] != xs[jb]:
                c = (je - jb) / (xs[je] - xs[jb])
                for jj in range(jb, je + 1):
                    best = max(best, (xs[jj] - xs[jb]) * c - (jj - jb - 1))
            dip_u = max(dip_u, best)
        dip = max(dip, dip_l, dip_u)
        if low == gcm[ig] and high == lcm[ih]:
            break
        low, high = gcm[ig], lcm[ih]
    return dip / (2 * n)


def dip_p_value(dip: float, n: int) -> float:
    """P(dip >= observed) under the uniform null, interpolated in the embedded table.

    Interpolates linearly in log(n) between tabulated sizes (n > 2000 uses the 2000 row: sqrt(n)
    * dip has converged there). Values beyond the table's 0.999 quantile are reported as 0.001.
    """
    ns = sorted(_DIP_NULL)
    n_c = min(max(n, ns[0]), ns[-1])
    stat = math.sqrt(n) * dip
    hi = next(i for i, m in enumerate(ns) if m >= n_c)
    lo = max(hi - 1, 0)
    q_lo = np.asarray(_DIP_NULL[ns[lo]])
    q_hi = np.asarray(_DIP_NULL[ns[hi]])
    if hi == lo or ns[hi] == n_c:
        q = q_hi
    else:
        w = (math.log(n_c) - math.log(ns[lo])) / (math.log(ns[hi]) - math.log(ns[lo]))
        q = (1 - w) * q_lo + w * q_hi
    cdf = float(np.interp(stat, q, _DIP_NULL_PROBS, left=0.0, right=_DIP_NULL_PROBS[-1]))
    return max(1.0 - cdf, 1.0 - _DIP_NULL_PROBS[-1])


def dip_test(
    x: np.ndarray, n_max: int = DIP_SUBSAMPLE, random_state: int = 0
) -> tuple[float, float]:
    """Hartigan's dip statistic and its p-value, on at most ``n_max`` events.

    The dip itself is the effect size (0 ~ unimodal, 0.25 = two point masses); the p-value is
    taken on a seeded subsample of ``n_max`` events because with 10^5 events any shoulder is
    "significant" while mattering to nobody.
    """
    x = np.asarray(x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size > n_max:
        rng = np.random.default_rng(random_state)
        x = x[rng.choice(x.size, n_max, replace=False)]
    if x.size < 4:
        return 0.0, 1.0
    d = dip_statistic(x)
    return d, dip_p_value(d, x.size)


def robust_cv(raw: np.ndarray) -> float:
    """MAD * 1.4826 / median of raw (compensated, untransformed) values.

    Undefined (NaN) when the median is not positive: a negative marker sits around zero after
    compensation and a CV of noise around zero means nothing.
    """
    raw = np.asarray(raw, dtype=float)
    raw = raw[np.isfinite(raw)]
    if raw.size == 0:
        return float("nan")
    med = float(np.median(raw))
    if med <= 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(raw - med)) / med)


# --------------------------------------------------------------------------------------------
# Population finding
# --------------------------------------------------------------------------------------------


def _robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQR/1.349 per column (std, then 1, where the IQR is zero)."""
    center = np.median(X, axis=0)
    q75, q25 = np.percentile(X, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    std = X.std(axis=0)
    scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
    return center, scale


def _check_matrix(X: np.ndarray, what: str = "events") -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] < 1:
        raise CytomscError(f"{what}: expected a 2-D array (events x channels), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise CytomscError(f"{what}: contains NaN or infinite values")
    return X


LOG10_MAX = 12.0  # a log10 scatter value above this is a linear value passed by mistake
POWER_EVENTS = 1000  # events on which the scatter scale is chosen
# Components grown per candidate scale. Fewer would be unfair: a scale that squeezes a third
# population into the others' tails would win against the right scale held to two components.
POWER_MAX_K = 3
POWER_TRIAL_ITER = 4  # EM steps per split start when comparing scales (8 in the real fit)
REG = 1e-6  # added to the covariance diagonal (scaled units): keeps it invertible


@dataclass
class TiedMixture:
    """A Gaussian mixture whose components share one covariance matrix.

    Why tied: subpopulations of a culture differ mostly in where they sit (a dimmer CD105, smaller
    cells), and a shared shape costs only d + 1 parameters per extra population. A full covariance
    per component costs d(d+3)/2 + 1, which BIC cannot afford for a 5 % population 2 SD away in
    6 dimensions, and which spends components on the shape of a single skewed population instead.
    """

    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, d)
    cov: np.ndarray  # (d, d)

    @property
    def n_components(self) -> int:
        return int(self.weights.size)

    def log_joint(self, Z: np.ndarray) -> np.ndarray:
        """log(weight_k) + log N(z | mean_k, cov) for every event and component."""
        d = Z.shape[1]
        chol = np.linalg.cholesky(self.cov)
        inv = np.linalg.inv(chol)
        a = Z @ inv.T
        b = self.means @ inv.T
        maha = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
        logdet = 2.0 * np.log(np.diag(chol)).sum()
        return -0.5 * (d * math.log(2 * math.pi) + logdet + np.maximum(maha, 0.0)) \
            + np.log(np.maximum(self.weights, 1e-300))[None, :]

    def responsibilities(self, Z: np.ndarray) -> tuple[np.ndarray, float]:
        lj = self.log_joint(Z)
        top = lj.max(axis=1, keepdims=True)
        ll = top[:, 0] + np.log(np.exp(lj - top).sum(axis=1))
        return np.exp(lj - ll[:, None]), float(ll.mean())

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return np.argmax(self.log_joint(Z), axis=1)

    def n_parameters(self, d: int) -> int:
        k = self.n_components
        return k * d + d * (d + 1) // 2 + k - 1

    def bic(self, Z: np.ndarray) -> float:
        _, ll = self.responsibilities(Z)
        n, d = Z.shape
        return -2.0 * n * ll + self.n_parameters(d) * math.log(n)


def _em(Z: np.ndarray, model: TiedMixture, max_iter: int = 200, tol: float = 1e-5
        ) -> tuple[TiedMixture, float]:
    """Expectation-maximisation from ``model``; returns the fit and its mean log-likelihood."""
    n, d = Z.shape
    eye = np.eye(d) * REG
    prev = -np.inf
    ll = prev
    for _ in range(max_iter):
        resp, ll = model.responsibilities(Z)
        nk = resp.sum(axis=0) + 1e-12
        means = (resp.T @ Z) / nk[:, None]
        cov = (Z.T @ Z - (means.T * nk) @ means) / n + eye
        model = TiedMixture(nk / n, means, 0.5 * (cov + cov.T))
        if ll - prev < tol:
            break
        prev = ll
    return model, ll


def _splits(Z: np.ndarray, model: TiedMixture) -> list[TiedMixture]:
    """Starting points for k+1 components: each component cut in two along each channel and along
    the shared covariance's main axis, at its 5th, 50th and 95th percentile. The outer cuts are
    what lets EM find a population of a few percent, which a median cut (or k-means) misses."""
    labels = model.predict(Z)
    d = Z.shape[1]
    _, vecs = np.linalg.eigh(model.cov)
    directions = [*np.eye(d), vecs[:, -1]]
    starts = []
    for j in range(model.n_components):
        mine = Z[labels == j]
        if mine.shape[0] < 40:
            continue
        for u in directions:
            proj = mine @ u
            for q in (5, 50, 95):
                cut = np.percentile(proj, q)
                low, high = proj <= cut, proj > cut
                if low.sum() < 10 or high.sum() < 10:
                    continue
                w = model.weights[j]
                starts.append(TiedMixture(
                    np.r_[np.delete(model.weights, j), w * low.mean(), w * high.mean()],
                    np.vstack([np.delete(model.means, j, 0), mine[low].mean(0),
                               mine[high].mean(0)]),
                    model.cov,
                ))
    return starts


class PopulationFinder:
    """Clustering that chooses the number of populations itself, 1 included (scikit-learn
    estimator shape: parameters in ``__init__``, learned state ending in ``_``).

    Fitted attributes: ``n_populations_``, ``labels_`` (1..k for ``subsample_index_``),
    ``model_`` (the TiedMixture, in scaled units), ``groups_`` (component indices of each
    population), ``stability_`` (mean bootstrap Jaccard per population), ``fractions_`` and
    ``fraction_ci95_`` (bootstrap percentile interval), ``bic_`` (k -> BIC),
    ``scatter_power_`` (the Box-Cox power chosen for ``log_columns``),
    ``center_``/``scale_`` (the robust scaling, after that power).
    """

    def __init__(
        self,
        max_k: int = 6,
        min_fraction: float = 0.015,
        n_subsample: int = 10000,
        n_search: int = 2500,
        n_bootstrap: int = 20,
        bootstrap_size: int = 4000,
        min_stability: float = 0.5,
        trim: float = 5.0,
        log_columns: tuple[int, ...] = (),
        scatter_powers: tuple[float, ...] = (0.0, 0.5, 1.0),
        random_state: int = 0,
    ) -> None:
        self.max_k = max_k
        self.min_fraction = min_fraction
        self.n_subsample = n_subsample
        self.n_search = n_search
        self.n_bootstrap = n_bootstrap
        self.bootstrap_size = bootstrap_size
        self.min_stability = min_stability
        self.trim = trim
        self.log_columns = tuple(log_columns)
        self.scatter_powers = tuple(scatter_powers)
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> PopulationFinder:
        """Choose the populations on a subsample of X (events x channels)."""
        X = _check_matrix(X)
        # Small matrix products: threads only contend, and one thread keeps results bit-stable.
        with threadpool_limits(1):
            return self._fit(X)

    def _fit(self, X: np.ndarray) -> PopulationFinder:
        if self.log_columns and float(X[:, list(self.log_columns)].max()) > LOG10_MAX:
            raise CytomscError("heterogeneity input: scatter columns must be log10 values "
                               f"(found values above {LOG10_MAX:g})")
        rng = np.random.default_rng(self.random_state)
        n = X.shape[0]
        idx = np.arange(n) if n <= self.n_subsample else \
            np.sort(rng.choice(n, self.n_subsample, replace=False))
        self.subsample_index_ = idx
        # Scaling is taken on the fitting subsample: the model sees only it, and medians of 10^6
        # events per candidate scale would cost more than the fit.
        Xs = X[idx]
        # Events far out in any channel (a CD105-negative cell in a CD105-bright culture, a
        # remaining doublet) would each want a component: the model is fitted without them and
        # they are assigned afterwards like every other event. Judged on the input scales, so
        # every scatter power below is fitted to the same events.
        c0, s0 = _robust_scale(Xs)
        core = np.all(np.abs((Xs - c0) / s0) <= self.trim, axis=1)
        if core.sum() < 50:
            core = np.ones(idx.size, dtype=bool)
        n_core = int(core.sum())
        pick = np.arange(n_core) if n_core <= self.n_search else \
            np.sort(rng.choice(n_core, self.n_search, replace=False))
        powers = self.scatter_powers if self.log_columns else (0.0,)
        best_score, chosen, chosen_scaling = math.inf, powers[0], None
        # The scatter scale is chosen on a small part of the search subsample, spread over the
        # run; only the chosen scale is then fitted on the whole fitting set.
        few = Xs[core][pick[:: max(1, pick.size // POWER_EVENTS)][:POWER_EVENTS]]
        for power in (powers if len(powers) > 1 else ()):
            center, scale = _robust_scale(self.transform(Xs, power))
            S = (self.transform(few, power) - center) / scale
            model, bic = self._grow(S, S, max_k=POWER_MAX_K, trial_iter=POWER_TRIAL_ITER)
            # BIC of the data on the input scales: the transform's Jacobian and the scaling
            # enter the likelihood, so models fitted after different powers compare fairly.
            score = bic[model.n_components] - 2.0 * float(
                self._log_jacobian(few, power).sum()
            ) + 2.0 * S.shape[0] * float(np.log(scale).sum())
            if score < best_score:
                best_score, chosen, chosen_scaling = score, power, (center, scale)
        self.scatter_power_ = chosen
        self.center_, self.scale_ = chosen_scaling or _robust_scale(self.transform(Xs, chosen))
        Z = self._scaled(Xs)
        Zc = Z[core]
        self.model_, self.bic_ = self._grow(Zc, Zc[pick])
        best = self.model_
        resp, _ = best.responsibilities(Z)
        groups = self._fold_tiny(resp, [[c] for c in range(best.n_components)])
        groups, boot = self._stabilize(Zc, groups, rng)
        # Population 1 is the largest: ids then read the same way in every culture's report.
        size = np.bincount(_argmax_groups(resp, groups), minlength=len(groups))
        order = np.argsort(-size, kind="stable")
        groups = [groups[i] for i in order]
        self.stability_ = self.stability_[order]
        self.groups_ = groups
        self.n_populations_ = len(groups)
        self.labels_ = _argmax_groups(resp, groups) + 1
        self._bootstrap_fractions(boot, groups)
        return self

    def _grow(self, Zc: np.ndarray, search: np.ndarray, max_k: int | None = None,
              trial_iter: int = 8) -> tuple[TiedMixture, dict[int, float]]:
        """Greedy splitting from one component while BIC improves: the best of many cheap starts
        on the search subsample, then EM on the whole fitting set. Returns the model and the BIC
        of every k tried."""
        d = Zc.shape[1]
        cov = np.cov(Zc.T).reshape(d, d) + np.eye(d) * REG
        best = TiedMixture(np.ones(1), Zc.mean(0, keepdims=True), cov)
        bic = {1: best.bic(Zc)}
        max_k = max(1, min(max_k or self.max_k, Zc.shape[0] // max(20, 5 * d)))
        while best.n_components < max_k:
            trials = [_em(search, s, max_iter=trial_iter) for s in _splits(search, best)]
            if not trials:
                break
            top = sorted(trials, key=lambda t: -t[1])[:3]
            fits = [_em(search, m)[0] for m, _ in top]
            cand, _ = _em(Zc, max(fits, key=lambda m: m.responsibilities(search)[1]))
            bic[cand.n_components] = cand.bic(Zc)
            if bic[cand.n_components] >= bic[best.n_components]:
                break
            best = cand
        return best, bic

    def transform(self, X: np.ndarray, power: float | None = None) -> np.ndarray:
        """The ``log_columns`` (log10 of scatter) moved to the Box-Cox power ``power`` of the
        linear value: 0 leaves them on the log scale, 1 is linear."""
        power = self.scatter_power_ if power is None else power
        if power == 0 or not self.log_columns:
            return X
        cols = list(self.log_columns)
        Y = X.copy()
        Y[:, cols] = np.expm1(power * math.log(10.0) * X[:, cols]) / power
        return Y

    def _log_jacobian(self, X: np.ndarray, power: float) -> np.ndarray:
        """log |d transform / d input| per event, summed over the log columns."""
        if power == 0 or not self.log_columns:
            return np.zeros(X.shape[0])
        t = X[:, list(self.log_columns)]
        return (math.log(math.log(10.0)) + power * math.log(10.0) * t).sum(axis=1)

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return (self.transform(X) - self.center_) / self.scale_

    def _fold_tiny(self, resp: np.ndarray, groups: list[list[int]]) -> list[list[int]]:
        """Fold groups under min_fraction into the group their events are otherwise closest to."""
        while len(groups) > 1:
            lab = _argmax_groups(resp, groups)
            frac = np.bincount(lab, minlength=len(groups)) / lab.size
            g = int(np.argmin(frac))
            if frac[g] >= self.min_fraction:
                break
            gp = _group_resp(resp, groups)
            mine = lab == g if np.any(lab == g) else np.ones(lab.size, bool)
            share = gp[mine].sum(axis=0)
            share[g] = -1.0
            groups = _join(groups, g, int(np.argmax(share)))
        return groups

    def _stabilize(self, Z: np.ndarray, groups: list[list[int]], rng: np.random.Generator
                   ) -> tuple[list[list[int]], list[tuple[np.ndarray, np.ndarray]]]:
        """Bootstrap refits; merge populations that do not survive resampling (Hennig 2007).

        Returns the surviving groups and, per resample, (drawn indices into the bootstrap base,
        component posteriors of the base) so fractions can be taken without refitting.
        """
        base = np.arange(Z.shape[0])
        if base.size > self.bootstrap_size:
            base = np.sort(rng.choice(base.size, self.bootstrap_size, replace=False))
        Zb = Z[base]
        ref_resp, _ = self.model_.responsibilities(Zb)
        boot: list[tuple[np.ndarray, np.ndarray]] = []
        for _ in range(self.n_bootstrap if self.model_.n_components > 1 else 0):
            draw = rng.integers(0, base.size, base.size)
            refit, _ = _em(Zb[draw], self.model_, max_iter=30)
            boot.append((draw, refit.responsibilities(Zb)[0]))
        self.stability_ = np.ones(len(groups))
        while len(groups) > 1 and boot:
            ref = _argmax_groups(ref_resp, groups)
            jac = np.zeros(len(groups))
            confusion = np.zeros((len(groups), len(groups)))
            for _, r in boot:
                lab = _argmax_groups(r, groups)
                for g in range(len(groups)):
                    a, b = ref == g, lab == g
                    union = np.count_nonzero(a | b)
                    jac[g] += np.count_nonzero(a & b) / union if union else 0.0
                    confusion[g] += np.bincount(lab[a], minlength=len(groups))
            jac /= len(boot)
            self.stability_ = jac
            g = int(np.argmin(jac))
            if jac[g] >= self.min_stability:
                break
            confusion[g, g] = -1.0
            groups = _join(groups, g, int(np.argmax(confusion[g])))
        if len(groups) == 1:
            self.stability_ = np.ones(1)
        return groups, boot

    def _bootstrap_fractions(
        self, boot: list[tuple[np.ndarray, np.ndarray]], groups: list[list[int]]
    ) -> None:
        k = len(groups)
        self.fractions_ = np.bincount(self.labels_ - 1, minlength=k) / self.labels_.size
        if not boot:
            self.fraction_ci95_ = np.column_stack([self.fractions_, self.fractions_])
            return
        fr = np.array(
            [np.bincount(_argmax_groups(r, groups)[draw], minlength=k) / draw.size
             for draw, r in boot]
        )
        self.fraction_ci95_ = np.column_stack(
            [np.percentile(fr, 2.5, axis=0), np.percentile(fr, 97.5, axis=0)]
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Population 1..k of every event (in chunks, so 10^6 events stay light on memory)."""
        X = _check_matrix(X)
        out = np.empty(X.shape[0], dtype=np.int64)
        step = 200_000
        with threadpool_limits(1):
            for s in range(0, X.shape[0], step):
                resp, _ = self.model_.responsibilities(self._scaled(X[s: s + step]))
                out[s: s + step] = _argmax_groups(resp, self.groups_) + 1
        return out

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).predict(X)


def _group_resp(resp: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    return np.column_stack([resp[:, g].sum(axis=1) for g in groups])


def _argmax_groups(resp: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    return np.argmax(_group_resp(resp, groups), axis=1)


def _join(groups: list[list[int]], g: int, into: int) -> list[list[int]]:
    merged = [list(x) for x in groups]
    merged[into] = sorted(merged[into] + merged[g])
    del merged[g]
    return merged


# --------------------------------------------------------------------------------------------
# Per-culture and batch descriptions
# --------------------------------------------------------------------------------------------

LABEL_Z = 0.5  # |population median - culture median| in culture robust SDs to earn a word
LABEL_WORDS = {"FSC": ("small", "large"), "SSC": ("low SSC", "high SSC")}
EMBEDDING_EVENTS = 5000
JOINT_FIT_EVENTS = 20_000


def _is_scatter(channel: str) -> bool:
    return scatter_family(channel) is not None


def scale_name(power: float) -> str:
    """The Box-Cox power of the scatter scale in words, for reports."""
    return {0.0: "log", 0.5: "square root", 1.0: "linear"}.get(power, f"power {power:g}")


def _scatter_columns(channels: list[str]) -> tuple[int, ...]:
    return tuple(i for i, ch in enumerate(channels) if _is_scatter(ch))


def phenotype_label(
    medians_t: np.ndarray, center: np.ndarray, scale: np.ndarray, channels: list[str],
    names: dict[str, str], max_terms: int = 3,
) -> str:
    """Short phenotype of one population, relative to the culture's overall distribution.

    A channel earns a word when the population's median (plot units) lies at least LABEL_Z
    robust SDs (IQR/1.349 of the whole culture) from the culture's median: markers "dim" /
    "bright", FSC "small" / "large", SSC "low SSC" / "high SSC". The ``max_terms`` largest
    departures are named, markers first then scatter; "typical" when none qualifies.
    """
    z = (medians_t - center) / scale
    order = [i for i in np.argsort(-np.abs(z), kind="stable") if abs(z[i]) >= LABEL_Z]
    order = order[:max_terms]
    markers = [i for i in order if not _is_scatter(channels[i])]
    scatter = [i for i in order if _is_scatter(channels[i])]
    words = [f"{names.get(channels[i], channels[i])} {'bright' if z[i] > 0 else 'dim'}"
             for i in markers]
    for i in scatter:
        lo, hi = LABEL_WORDS[scatter_family(channels[i]) or "FSC"]
        words.append(hi if z[i] > 0 else lo)
    if not words:
        return "typical"
    if markers and scatter:
        return " ".join(words[: len(markers)]) + ", " + ", ".join(words[len(markers):])
    return " ".join(words) if markers else ", ".join(words)


def _embedding(Z: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """2-D PCA of a seeded subsample of the robust-scaled events (for the report's scatter)."""
    idx = np.arange(Z.shape[0])
    if idx.size > EMBEDDING_EVENTS:
        idx = np.sort(rng.choice(idx.size, EMBEDDING_EVENTS, replace=False))
    sub = Z[idx] - Z[idx].mean(axis=0)
    _, _, vt = np.linalg.svd(sub, full_matrices=False)
    comps = vt[:2]
    # SVD signs are arbitrary: make each axis' largest loading positive, for stable plots.
    signs = np.sign([c[int(np.argmax(np.abs(c)))] for c in comps])
    comps = comps * signs[:, None]
    coords = sub @ comps.T
    if coords.shape[1] < 2:
        coords = np.column_stack([coords, np.zeros(coords.shape[0])])
    return coords, labels[idx]


def _entropy(fractions: np.ndarray) -> float:
    p = fractions[fractions > 0]
    return float(-(p * np.log(p)).sum())


def describe_heterogeneity(
    X: np.ndarray, channels: list[str], names: dict[str, str], raw: np.ndarray, seed: int = 0,
    **finder_kwargs,
) -> tuple[HeterogeneityResult, np.ndarray]:
    """Cluster one culture's live single cells and describe its heterogeneity.

    X: events x channels, marker channels in plot (logicle) units and FSC-A/SSC-A as log10; raw:
    the same events and channels, compensated but untransformed (medians and robust CVs are
    reported in these units). Returns the result and each event's population 1..k.
    """
    X = _check_matrix(X, "heterogeneity input")
    raw = _check_matrix(raw, "heterogeneity raw values")
    if X.shape != raw.shape or X.shape[1] != len(channels):
        raise CytomscError(
            f"heterogeneity input: shapes {X.shape} and {raw.shape} do not match "
            f"{len(channels)} channels"
        )
    if X.shape[0] < 50:
        raise CytomscError(f"heterogeneity input: {X.shape[0]} events are too few to cluster")
    finder = PopulationFinder(random_state=seed, log_columns=_scatter_columns(channels),
                              **finder_kwargs).fit(X)
    labels = finder.predict(X)
    k = finder.n_populations_
    fractions = np.bincount(labels - 1, minlength=k) / labels.size
    populations = []
    for j in range(k):
        mine = labels == j + 1
        med_t = finder.transform(np.median(X[mine], axis=0)[None, :])[0]
        med_raw = np.median(raw[mine], axis=0)
        label = ("all cells" if k == 1 else
                 phenotype_label(med_t, finder.center_, finder.scale_, channels, names))
        lo, hi = finder.fraction_ci95_[j]
        populations.append(Population(
            id=j + 1, fraction=float(fractions[j]),
            ci95=(float(min(lo, fractions[j])), float(max(hi, fractions[j]))),
            medians={ch: float(v) for ch, v in zip(channels, med_raw, strict=True)},
            label=label,
        ))
    bimodality: dict[str, Bimodality] = {}
    for i, ch in enumerate(channels):
        d, p = dip_test(X[:, i], random_state=seed + i)
        bimodality[ch] = Bimodality(dip=d, p_value=p, bimodal=bool(p < DIP_ALPHA),
                                    robust_cv=robust_cv(raw[:, i]))
    rng = np.random.default_rng([seed, 1])
    coords, emb_labels = _embedding(finder._scaled(X), labels, rng)
    h = _entropy(fractions)
    result = HeterogeneityResult(
        n_populations=k, populations=populations, entropy=h, effective_number=math.exp(h),
        bimodality=bimodality, channels=list(channels), method=METHOD,
        n_events=int(finder.subsample_index_.size), embedding=coords,
        embedding_labels=emb_labels,
        scatter_scale=scale_name(finder.scatter_power_) if finder.log_columns else "",
    )
    return result, labels


def joint_populations(
    cultures: dict[str, np.ndarray], channels: list[str], names: dict[str, str], seed: int = 0,
    per_culture: int = 5000, **finder_kwargs,
) -> dict:
    """One clustering across a batch, so population ids mean the same in every culture.

    Each culture contributes an equal seeded subsample (``per_culture`` events, or all it has)
    so a big culture cannot outvote a small one; the model is then applied to every event.
    Returns ``{"populations": [{"id", "label"}...], "table": {culture: [fraction per id]},
    "events": {culture: n}, "method": ...}`` (JSON-ready, for ``BatchResult.batch_populations``)
    plus ``"labels": {culture: per-event ids}``, which must be popped before serializing.
    """
    if not cultures:
        raise CytomscError("joint clustering: no cultures given")
    names_sorted = sorted(cultures)
    parts = []
    for i, name in enumerate(names_sorted):
        Xc = _check_matrix(cultures[name], f"culture {name}")
        if Xc.shape[1] != len(channels):
            raise CytomscError(f"culture {name}: {Xc.shape[1]} channels, expected {len(channels)}")
        rng = np.random.default_rng([seed, i])
        take = min(per_culture, Xc.shape[0])
        parts.append(Xc[np.sort(rng.choice(Xc.shape[0], take, replace=False))])
    pooled = np.vstack(parts)
    # The model is fitted on at most JOINT_FIT_EVENTS pooled events (still an equal share per
    # culture in expectation): a 96-culture batch must not cost 96 cultures' worth of EM.
    kwargs = {"n_subsample": min(pooled.shape[0], JOINT_FIT_EVENTS),
              "log_columns": _scatter_columns(channels), **finder_kwargs}
    finder = PopulationFinder(random_state=seed, **kwargs).fit(pooled)
    k = finder.n_populations_
    pooled_labels = finder.predict(pooled)
    populations = []
    for j in range(k):
        med = finder.transform(np.median(pooled[pooled_labels == j + 1], axis=0)[None, :])[0]
        label = ("all cells" if k == 1 else
                 phenotype_label(med, finder.center_, finder.scale_, channels, names))
        populations.append({"id": j + 1, "label": label})
    labels, table, events = {}, {}, {}
    for name in names_sorted:
        lab = finder.predict(cultures[name])
        labels[name] = lab
        table[name] = (np.bincount(lab - 1, minlength=k) / lab.size).tolist()
        events[name] = int(lab.size)
    return {"method": METHOD, "per_culture": per_culture, "populations": populations,
            "table": table, "events": events, "labels": labels}
