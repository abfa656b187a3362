"""A Gaussian mixture whose components share one shape and differ in volume, grown by splitting.

Why this model (the first stage of ``populations.PopulationFinder``): its components are not the
populations. They are the building blocks, many enough to follow a skewed or heavy-tailed
population with several of them; the populations are decided afterwards, from the data, by
``populations``. The shape is shared (mclust's "VEE": covariance_k = scale_k * shape) because:

- a heavy tail is a scale mixture of Gaussians: a wide component at the same centre models it
  with one parameter (its scale), where a tied mixture (one covariance) has to put shifted
  components in the tail, which then look like small populations;
- a real population of a few percent costs only d + 2 parameters, so BIC can afford it (a full
  covariance per component costs d(d+3)/2 + 1, which BIC cannot afford for a 5 % population in
  8 channels).

scikit-learn's ``GaussianMixture`` has tied and full covariances but not this one, and its
per-fit overhead (input validation, k-means initialisation) would dominate the hundreds of small
trial fits of the growth; so the EM is written here, vectorised over components.

Growth (Verbeek et al. 2003's greedy EM, with BIC as the stopping rule): from one component,
every component is offered a few splits: the best cut of its events along each channel and
along its main axis (screened in one pass over per-channel histograms, the best two kept) and a
"tail" split (a narrow and a wide component at the same centre). Each is refined by a few EM
steps on a search subsample; the best is run to convergence on the fitting set and kept while
BIC improves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LOG2PI = math.log(2.0 * math.pi)
REG = 1e-6  # added to the shape's diagonal (scaled units): keeps it invertible
MIN_SCALE = 1e-4  # smallest component volume relative to the shape
SCREEN_EVENTS = 1000  # events of a component looked at to choose where to cut it
SCREEN_BINS = 64
MIN_SIDE = 0.03  # least share of a component's events on each side of a screened cut
SCREEN_ITER = 15  # EM steps of the 1-D screening
CUTS_PER_COMPONENT = 2  # best directions kept per component (plus the tail split)
SPLIT_COMPONENTS = 3  # components offered splits per growth step (the most promising)
OUTER_CUTS = (5, 95)  # percentiles cut besides the crossing (shoulders of 5-20 %)
TRIAL_ITER = 5  # EM steps per trial split (on the search subsample)
TRIALS_KEPT = 2  # trials refined on the search subsample per growth step


@dataclass(frozen=True)
class Mixture:
    """Weights (k,), means (k, d), the shared shape (d, d; determinant 1) and the components'
    volumes (k,): component j is N(means[j], scales[j] * shape)."""

    weights: np.ndarray
    means: np.ndarray
    shape: np.ndarray
    scales: np.ndarray

    @property
    def k(self) -> int:
        return int(self.weights.size)

    def n_parameters(self) -> int:
        d = self.means.shape[1]
        return self.k * d + d * (d + 1) // 2 - 1 + self.k + (self.k - 1)

    def log_joint(self, Z: np.ndarray) -> np.ndarray:
        """log(weight_j) + log N(z | component j), (n, k)."""
        d = Z.shape[1]
        chol = np.linalg.cholesky(self.shape)
        inv = np.linalg.inv(chol)
        a = Z @ inv.T  # whitened events
        b = self.means @ inv.T
        maha = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
        np.maximum(maha, 0.0, out=maha)
        logdet = 2.0 * float(np.log(np.diag(chol)).sum())
        s = self.scales[None, :]
        return np.log(np.maximum(self.weights, 1e-300))[None, :] - 0.5 * (
            d * LOG2PI + logdet + d * np.log(s) + maha / s
        )

    def responsibilities(self, Z: np.ndarray) -> tuple[np.ndarray, float]:
        """Posterior of each component for each event, and the mean log-likelihood."""
        lj = self.log_joint(Z)
        top = lj.max(axis=1, keepdims=True)
        lj -= top
        np.exp(lj, out=lj)
        tot = lj.sum(axis=1, keepdims=True)
        lj /= tot
        return lj, float((top[:, 0] + np.log(tot[:, 0])).mean())

    def bic(self, Z: np.ndarray) -> float:
        _, ll = self.responsibilities(Z)
        n = Z.shape[0]
        return -2.0 * n * ll + self.n_parameters() * math.log(n)


def m_step(Z: np.ndarray, resp: np.ndarray, scales: np.ndarray | None = None) -> Mixture:
    """Weights, means, the shared shape and the volumes from responsibilities. The shape and the
    volumes are found by alternating their closed forms (Celeux & Govaert 1995) a few times."""
    n, d = Z.shape
    nk = resp.sum(axis=0) + 1e-10
    means = (resp.T @ Z) / nk[:, None]
    # scatter of each component around its own mean: (k, d, d), one matrix product
    k = nk.size
    second = ((resp[:, :, None] * Z[:, None, :]).reshape(n, k * d).T @ Z).reshape(k, d, d)
    S = second - nk[:, None, None] * (means[:, :, None] * means[:, None, :])
    sc = np.ones(nk.size) if scales is None else scales.copy()
    eye = np.eye(d)
    shape = eye
    for _ in range(3):
        shape = (S / sc[:, None, None]).sum(axis=0) / n + eye * REG
        shape = 0.5 * (shape + shape.T)
        sign, logdet = np.linalg.slogdet(shape)
        shape /= math.exp(logdet / d)
        inv = np.linalg.inv(shape)
        sc = np.maximum((S * inv[None, :, :]).sum(axis=(1, 2)) / (d * nk), MIN_SCALE)
    return Mixture(nk / n, means, shape, sc)


def em(
    Z: np.ndarray, model: Mixture, max_iter: int = 100, tol: float = 1e-4
) -> tuple[Mixture, float]:
    """EM from ``model``; returns the fit and its mean log-likelihood per event."""
    prev = -math.inf
    ll = prev
    for _ in range(max_iter):
        resp, ll = model.responsibilities(Z)
        model = m_step(Z, resp, model.scales)
        if ll - prev < tol:
            break
        prev = ll
    return model, ll


def single(Z: np.ndarray) -> Mixture:
    """One component: the data's mean and covariance."""
    d = Z.shape[1]
    cov = np.cov(Z.T).reshape(d, d) + np.eye(d) * REG
    det = math.exp(np.linalg.slogdet(cov)[1] / d)
    return Mixture(np.ones(1), Z.mean(axis=0, keepdims=True), cov / det, np.array([det]))


def _best_cuts(X: np.ndarray, directions: np.ndarray) -> list[tuple[float, int, float]]:
    """For each direction (rows of ``directions``), how much better two Gaussians explain the
    projected events than one, and where to cut between them: a 1-D mixture fitted by EM on a
    histogram, all directions at once, from cuts at the 10th, 50th and 90th percentiles.
    Returns (gain in log-likelihood, direction index, cut), best first."""
    P = X @ directions.T  # (n, m)
    n, m = P.shape
    lo, hi = P.min(axis=0), P.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    width = span / SCREEN_BINS
    idx = np.clip(((P - lo) / span * SCREEN_BINS).astype(int), 0, SCREEN_BINS - 1)
    cnt = np.stack([np.bincount(idx[:, j], minlength=SCREEN_BINS) for j in range(m)]).astype(float)
    x = lo[:, None] + width[:, None] * (np.arange(SCREEN_BINS) + 0.5)  # (m, bins)
    mean = (cnt * x).sum(1) / n
    var0 = np.maximum((cnt * (x - mean[:, None]) ** 2).sum(1) / n, (width / 4) ** 2)
    ll1 = -0.5 * n * (LOG2PI + np.log(var0) + 1.0)
    best = np.full(m, -np.inf)
    cut_at = np.zeros(m)
    for q in (10, 50, 90):
        c0 = np.percentile(P, q, axis=0)
        r = (x <= c0[:, None]).astype(float)  # (m, bins): responsibility of the lower Gaussian
        for _ in range(SCREEN_ITER):
            w1, w2 = (cnt * r).sum(1) + 1e-9, (cnt * (1 - r)).sum(1) + 1e-9
            m1, m2 = (cnt * r * x).sum(1) / w1, (cnt * (1 - r) * x).sum(1) / w2
            v1 = np.maximum((cnt * r * (x - m1[:, None]) ** 2).sum(1) / w1, (width / 4) ** 2)
            v2 = np.maximum((cnt * (1 - r) * (x - m2[:, None]) ** 2).sum(1) / w2, (width / 4) ** 2)
            l1 = np.log(w1 / n)[:, None] - 0.5 * (
                np.log(v1)[:, None] + (x - m1[:, None]) ** 2 / v1[:, None]
            )
            l2 = np.log(w2 / n)[:, None] - 0.5 * (
                np.log(v2)[:, None] + (x - m2[:, None]) ** 2 / v2[:, None]
            )
            top = np.maximum(l1, l2)
            r = np.exp(l1 - top) / (np.exp(l1 - top) + np.exp(l2 - top))
        ll2 = (cnt * (top + np.log(np.exp(l1 - top) + np.exp(l2 - top)) - 0.5 * LOG2PI)).sum(1)
        share = np.minimum(w1, w2) / n
        gain = np.where(share >= MIN_SIDE, ll2 - ll1, -np.inf)
        # between the two means, as many of its own SDs from each
        sd1, sd2 = np.sqrt(v1), np.sqrt(v2)
        cut = (m1 * sd2 + m2 * sd1) / (sd1 + sd2)
        better = gain > best
        best = np.where(better, gain, best)
        cut_at = np.where(better, cut, cut_at)
    out = [(float(best[j]), j, float(cut_at[j])) for j in range(m) if np.isfinite(best[j])]
    return sorted(out, reverse=True)


def split_candidates(Z: np.ndarray, model: Mixture, rng: np.random.Generator) -> list[Mixture]:
    """k+1-component starting points. Every component's events are screened along each channel
    and its main axes (``_best_cuts``); the SPLIT_COMPONENTS components whose best cut gains
    most are offered: a cut there (where two Gaussians meet, and at the outer 5 % so that EM
    can find a shoulder of a few percent) for their best CUTS_PER_COMPONENT directions, and a
    wide twin at their centre (a heavy tail). Screening every component but trying only the
    most promising keeps a growth step's cost flat in k."""
    labels = model.log_joint(Z).argmax(axis=1)
    d = Z.shape[1]
    _, vecs = np.linalg.eigh(model.shape)
    screened = []
    for j in range(model.k):
        mine = Z[labels == j]
        if mine.shape[0] < 40:
            continue
        if mine.shape[0] > SCREEN_EVENTS:
            mine = mine[rng.choice(mine.shape[0], SCREEN_EVENTS, replace=False)]
        centred = mine - mine.mean(axis=0)
        local = np.linalg.eigh(np.cov(centred.T).reshape(d, d))[1][:, -1]
        directions = np.vstack([np.eye(d), local, vecs[:, -1]])
        cuts = _best_cuts(mine, directions)[:CUTS_PER_COMPONENT]
        top = cuts[0][0] if cuts else -math.inf
        screened.append((top, j, mine, directions, cuts))
    screened.sort(key=lambda t: -t[0])
    out = []
    for _, j, mine, directions, cuts in screened[:SPLIT_COMPONENTS]:
        w, mu, s = model.weights[j], model.means[j], model.scales[j]
        rest_w = np.delete(model.weights, j)
        rest_m = np.delete(model.means, j, axis=0)
        rest_s = np.delete(model.scales, j)
        out.append(
            Mixture(
                np.r_[rest_w, 0.7 * w, 0.3 * w],
                np.vstack([rest_m, mu, mu]),
                model.shape,
                np.r_[rest_s, 0.6 * s, 2.5 * s],
            )
        )
        for _, i, cut in cuts:
            proj = mine @ directions[i]
            for at in (cut, *np.percentile(proj, OUTER_CUTS)):
                low, high = proj <= at, proj > at
                if low.sum() < 10 or high.sum() < 10:
                    continue
                out.append(
                    Mixture(
                        np.r_[rest_w, w * low.mean(), w * high.mean()],
                        np.vstack([rest_m, mine[low].mean(axis=0), mine[high].mean(axis=0)]),
                        model.shape,
                        np.r_[rest_s, s, s],
                    )
                )
    return out


def grow(
    Z: np.ndarray,
    search: np.ndarray,
    max_k: int,
    rng: np.random.Generator,
    trial_iter: int = TRIAL_ITER,
) -> tuple[Mixture, dict[int, float]]:
    """Greedy splitting from one component while BIC (on ``Z``) improves; trial splits are
    refined on ``search`` (a subsample of ``Z``). Returns the model and the BIC of each k."""
    best = single(Z)
    bic = {1: best.bic(Z)}
    max_k = max(1, min(max_k, Z.shape[0] // max(20, 5 * Z.shape[1])))
    while best.k < max_k:
        starts = split_candidates(search, best, rng)
        if not starts:
            break
        trials = [em(search, s, max_iter=trial_iter, tol=0.0) for s in starts]
        # the two most promising trials are refined: a split that looks best after a few
        # steps (often a tail of outliers) is not always the one that ends best
        top = sorted(trials, key=lambda t: -t[1])[:TRIALS_KEPT]
        refined = max((em(search, m, max_iter=20) for m, _ in top), key=lambda t: t[1])[0]
        cand, _ = em(Z, refined, max_iter=50)
        b = cand.bic(Z)
        if b >= bic[best.k]:
            break
        bic[cand.k] = b
        best = cand
    return best, bic
