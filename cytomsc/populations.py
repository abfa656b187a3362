"""How many populations a culture's cells form, and which cell belongs to which.

Why this exists: a culture can pass the ISCT criteria and still be a mixture, and a method that is
told k (FlowSOM, k-means) always finds k. This one chooses k itself, and one is a possible answer.
Real populations are skewed and heavy-tailed, each in its own way, so k is not the number of
Gaussian components that fit best: that number counts shapes. The method
(``PopulationFinder``, validated in docs/heterogeneity-validation.md):

1. **Scale.** Every channel is centred on its median and divided by its IQR/1.349. FSC/SSC
   (``log_columns``, given as log10) are tried at Box-Cox powers 0 (log), 0.5 and 1 (linear) of
   the linear value, because cell size is log-normal on some instruments and nearer Gaussian on
   the linear scale on others; the power with the lowest BIC of a small mixture, Jacobian
   included, is kept (flowClust's Box-Cox idea, Lo et al. 2008).
2. **Building blocks.** A mixture of Gaussians sharing one shape (``mixture.grow``) is grown by
   splitting while BIC improves. Its components follow the shapes; they are not populations.
3. **Tiny blocks** (under ``min_fraction`` of the events) are joined to the block they share most
   events with: they are never populations.
4. **A tree.** Blocks are joined bottom-up by Ward's criterion in the mixture's own metric, so
   small pieces join their neighbours early and the pieces of one population meet before
   different populations do.
5. **Decisions, from the root down.** A node is split into its two branches only when (a) each
   holds at least ``min_fraction`` of the events, (b) their events, projected on the line that
   separates them, are better explained by two populations than by one skewed, heavy-tailed one
   by more than ``margin`` BIC points (``split_test``), and (c) they differ where a difference can
   be biology: in FSC/SSC, or in a marker where at least one of them sits above the marker's
   negative region (``negative_ceilings``). Populations that differ only in the spread of their
   negative cells (compensation spreading from a bright dye) are one population. Each test sees a
   whole candidate population, never a narrow window of one.
6. **Uncertainty.** Each test's evidence is re-weighed on ``n_bootstrap`` Poisson bootstrap
   resamples of the events (shapes held fixed), the decisions are replayed, and the number of
   populations found in each resample is reported ("2 populations in 17 of 20 resamples"). The
   fractions' 95 % intervals come from the same resamples.

Everything random draws from ``numpy.random.Generator`` seeded by ``random_state``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from .errors import CytomscError
from .mixture import Mixture, grow
from .split_test import SplitTest, split_evidence

LOG10_MAX = 12.0  # a log10 scatter value above this is a linear value passed by mistake
POWER_EVENTS = 1000  # events on which the scatter scale is chosen
POWER_MAX_K = 3  # components per candidate scale (a third population must not decide the scale)
OUTLIER_SD = 6.0  # events farther than this from a channel's median are left out of the fit
BIOLOGY_SD = 1.0  # a difference in a channel counts from 1 pooled robust SD


def robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQR/1.349 per column (std, then 1, where the IQR is zero)."""
    center = np.median(X, axis=0)
    q75, q25 = np.percentile(X, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    std = X.std(axis=0)
    scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
    return center, scale


def check_matrix(X: np.ndarray, what: str = "events") -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] < 1:
        raise CytomscError(f"{what}: expected a 2-D array (events x channels), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise CytomscError(f"{what}: contains NaN or infinite values")
    return X


@dataclass(frozen=True)
class Decision:
    """One node of the tree, tested from the root down."""

    left: tuple[int, ...]  # blocks (indices into the fold groups) on each side
    right: tuple[int, ...]
    test: SplitTest | None  # None: not tested (a side under min_fraction)
    biological: bool
    split: bool


class PopulationFinder:
    """Populations with k chosen, 1 included (scikit-learn estimator shape: parameters in
    ``__init__``, learned state ending in ``_``).

    Fitted attributes: ``n_populations_``; ``labels_`` (1..k for ``subsample_index_``);
    ``model_`` (the building-block mixture, scaled units); ``groups_`` (its components per
    population, largest population first); ``fractions_`` and ``fraction_ci95_``;
    ``k_bootstrap_`` ({k: resamples}); ``decisions_``; ``scatter_power_``; ``center_``/``scale_``.
    """

    def __init__(
        self,
        max_components: int = 12,
        min_fraction: float = 0.015,
        margin: float = 10.0,
        n_subsample: int = 10000,
        n_search: int = 1200,
        n_bootstrap: int = 20,
        log_columns: tuple[int, ...] = (),
        scatter_powers: tuple[float, ...] = (0.0, 0.5, 1.0),
        negative_ceilings: tuple[float, ...] | None = None,
        random_state: int = 0,
    ) -> None:
        self.max_components = max_components
        self.min_fraction = min_fraction
        self.margin = margin
        self.n_subsample = n_subsample
        self.n_search = n_search
        self.n_bootstrap = n_bootstrap
        self.log_columns = tuple(log_columns)
        self.scatter_powers = tuple(scatter_powers)
        self.negative_ceilings = negative_ceilings
        self.random_state = random_state

    # ---- scales -------------------------------------------------------------------------
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
        if power == 0 or not self.log_columns:
            return np.zeros(X.shape[0])
        t = X[:, list(self.log_columns)]
        return (math.log(math.log(10.0)) + power * math.log(10.0) * t).sum(axis=1)

    def scaled(self, X: np.ndarray) -> np.ndarray:
        """Events in the units the model was fitted in."""
        return (self.transform(X) - self.center_) / self.scale_

    def _choose_power(
        self, Xs: np.ndarray, few: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, np.ndarray, np.ndarray]:
        powers = self.scatter_powers if self.log_columns else (0.0,)
        best: tuple[float, float, np.ndarray, np.ndarray] | None = None
        for power in powers:
            center, scale = robust_scale(self.transform(Xs, power))
            if len(powers) == 1:
                return power, center, scale
            S = (self.transform(few, power) - center) / scale
            model, bic = grow(S, S, POWER_MAX_K, rng, trial_iter=3)
            # BIC of the data on the input scales: Jacobian and scaling enter the likelihood
            score = (
                bic[model.k]
                - 2.0 * float(self._log_jacobian(few, power).sum())
                + 2.0 * S.shape[0] * float(np.log(scale).sum())
            )
            if best is None or score < best[0]:
                best = (score, power, center, scale)
        assert best is not None
        return best[1], best[2], best[3]

    # ---- fit ----------------------------------------------------------------------------
    def fit(self, X: np.ndarray) -> PopulationFinder:
        X = check_matrix(X)
        with threadpool_limits(1):  # small products: threads only contend; results bit-stable
            return self._fit(X)

    def _fit(self, X: np.ndarray) -> PopulationFinder:
        if self.log_columns and float(X[:, list(self.log_columns)].max()) > LOG10_MAX:
            raise CytomscError(
                "heterogeneity input: scatter columns must be log10 values "
                f"(found values above {LOG10_MAX:g})"
            )
        rng = np.random.default_rng(self.random_state)
        n, d = X.shape
        idx = (
            np.arange(n)
            if n <= self.n_subsample
            else np.sort(rng.choice(n, self.n_subsample, replace=False))
        )
        self.subsample_index_ = idx
        Xs = X[idx]
        core = _not_outliers(Xs)
        Xc = Xs[core]
        pick = (
            np.arange(Xc.shape[0])
            if Xc.shape[0] <= self.n_search
            else np.sort(rng.choice(Xc.shape[0], self.n_search, replace=False))
        )
        few = Xc[pick[:: max(1, pick.size // POWER_EVENTS)][:POWER_EVENTS]]
        self.scatter_power_, self.center_, self.scale_ = self._choose_power(Xs, few, rng)
        Z = self.scaled(Xs)
        Zc = Z[core]
        self.model_, self.bic_ = grow(Zc, Zc[pick], self.max_components, rng)
        resp, _ = self.model_.responsibilities(Z)
        blocks = _fold_tiny(resp, self.min_fraction)
        R = _group(resp, blocks)
        ceilings = self._scaled_ceilings(d)
        merges = _tree(Z, R, self.model_.shape)
        decisions = self._decide(Z, R, merges, ceilings)
        self.decisions_ = decisions
        groups = _final_groups(decisions, R.shape[1])
        G = _group(R, groups)
        size = G.argmax(axis=1)
        order = np.argsort(-np.bincount(size, minlength=len(groups)), kind="stable")
        groups = [groups[i] for i in order]
        self.blocks_ = blocks
        self.groups_ = [sorted(c for b in g for c in blocks[b]) for g in groups]
        self.n_populations_ = len(groups)
        self.labels_ = _group(resp, self.groups_).argmax(axis=1) + 1
        self._bootstrap(rng, R.shape[1], Z.shape[0])
        return self

    def _scaled_ceilings(self, d: int) -> np.ndarray | None:
        if self.negative_ceilings is None:
            return None
        raw = np.asarray(self.negative_ceilings, dtype=float)
        if raw.size != d:
            raise CytomscError(f"negative_ceilings: {raw.size} values for {d} channels")
        out = np.full(d, -np.inf)
        ok = np.isfinite(raw)
        out[ok] = (raw[ok] - self.center_[ok]) / self.scale_[ok]
        return out

    def _decide(
        self,
        Z: np.ndarray,
        R: np.ndarray,
        merges: list[tuple[int, int]],
        ceilings: np.ndarray | None,
    ) -> list[Decision]:
        """The root-down decisions, plus one look-ahead test below every node that stays whole
        (so the bootstrap can replay a split the data only narrowly refused)."""
        k = R.shape[1]
        n = Z.shape[0]
        out: list[Decision] = []
        todo: list[tuple[int, bool]] = [(k + len(merges) - 1, True)] if merges else []
        while todo:
            node, live = todo.pop()
            if node < k:
                continue
            a, b = merges[node - k]
            la, lb = _leaves(a, k, merges), _leaves(b, k, merges)
            rA, rB = R[:, la].sum(axis=1), R[:, lb].sum(axis=1)
            big = min(rA.sum(), rB.sum()) / n >= self.min_fraction
            test = split_evidence(Z, rA, rB, self.model_.shape) if big else None
            bio = _biological(Z, rA, rB, ceilings)
            split = live and test is not None and bio and test.gain > self.margin
            out.append(Decision(tuple(la), tuple(lb), test, bio, split))
            if split:
                todo += [(a, True), (b, True)]
            elif live:  # look one level further, for the bootstrap only
                todo += [(a, False), (b, False)]
        return out

    def _bootstrap(self, rng: np.random.Generator, k: int, n: int) -> None:
        """Replay the decisions with each test's evidence re-weighed on bootstrap resamples."""
        fractions = np.bincount(self.labels_ - 1, minlength=self.n_populations_) / n
        self.fractions_ = fractions
        B = self.n_bootstrap
        if B <= 0:
            self.k_bootstrap_ = {self.n_populations_: 0}
            self.fraction_ci95_ = np.column_stack([fractions, fractions])
            return
        draws = {
            i: d.test.resample(rng, B) for i, d in enumerate(self.decisions_) if d.test is not None
        }
        ks = []
        for b in range(B):
            split = [
                d.test is not None and d.biological and float(draws[i][b]) > self.margin
                for i, d in enumerate(self.decisions_)
            ]
            ks.append(_count_replayed(self.decisions_, split, k))
        self.k_bootstrap_ = dict(sorted(Counter(ks).items()))
        counts = rng.multinomial(n, fractions, size=B) / n
        self.fraction_ci95_ = np.column_stack(
            [
                np.minimum(np.percentile(counts, 2.5, axis=0), fractions),
                np.maximum(np.percentile(counts, 97.5, axis=0), fractions),
            ]
        )

    # ---- predict ------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Population 1..k of every event (in chunks, so 10^6 events stay light on memory)."""
        X = check_matrix(X)
        out = np.empty(X.shape[0], dtype=np.int64)
        step = 200_000
        with threadpool_limits(1):
            for s in range(0, X.shape[0], step):
                resp, _ = self.model_.responsibilities(self.scaled(X[s : s + step]))
                out[s : s + step] = _group(resp, self.groups_).argmax(axis=1) + 1
        return out

    def predict_own_weights(self, X: np.ndarray, max_iter: int = 200) -> np.ndarray:
        """Population 1..k of every event of one sample of a pooled fit, with the building
        blocks fixed and their weights re-estimated on ``X`` (EM on the weights alone).

        Why: a model fitted on several cultures pooled carries the pooled proportions, and
        assigning a culture's events with them pulls its fractions toward the pool's (a
        culture with 24 % of a population that is 8 % of the pool reads 18 %). With the
        culture's own weights the blocks, hence the populations, keep their meaning across
        cultures while each culture's fractions are its own."""
        X = check_matrix(X)
        with threadpool_limits(1):
            model = self.model_
            logw = np.log(np.maximum(model.weights, 1e-300))
            dens = model.log_joint(self.scaled(X)) - logw[None, :]  # log N(x | block)
            w = model.weights.copy()
            for _ in range(max_iter):
                lj = dens + np.log(np.maximum(w, 1e-300))[None, :]
                lj -= lj.max(axis=1, keepdims=True)
                np.exp(lj, out=lj)
                lj /= lj.sum(axis=1, keepdims=True)
                new = lj.mean(axis=0)
                done = float(np.abs(new - w).max()) < 1e-7
                w = new
                if done:
                    break
            lj = dens + np.log(np.maximum(w, 1e-300))[None, :]
            lj = np.exp(lj - lj.max(axis=1, keepdims=True))
            return _group(lj, self.groups_).argmax(axis=1) + 1

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).predict(X)


# ---- helpers ---------------------------------------------------------------------------------


def _not_outliers(X: np.ndarray) -> np.ndarray:
    """Events within OUTLIER_SD spreads of every channel's median, the spread being the larger
    of IQR/1.349 and the central 95 % range / 3.92 (so that a marker with a second, positive
    population is not cut at its negatives' width). A few far events (a CD105-negative cell in a
    CD105-bright culture, a remaining doublet) would each pull a component of their own; they
    are assigned afterwards like every other event."""
    med = np.median(X, axis=0)
    q = np.percentile(X, [2.5, 25, 75, 97.5], axis=0)
    spread = np.maximum((q[2] - q[1]) / 1.349, (q[3] - q[0]) / 3.92)
    spread = np.where(spread > 0, spread, 1.0)
    ok = np.all(np.abs(X - med) <= OUTLIER_SD * spread, axis=1)
    return ok if ok.sum() >= 50 else np.ones(X.shape[0], dtype=bool)


def _group(resp: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    return np.column_stack([resp[:, g].sum(axis=1) for g in groups])


def _fold_tiny(resp: np.ndarray, min_fraction: float) -> list[list[int]]:
    """Components under ``min_fraction`` joined to the component they share most events with."""
    groups = [[i] for i in range(resp.shape[1])]
    while len(groups) > 1:
        G = _group(resp, groups)
        w = G.mean(axis=0)
        j = int(np.argmin(w))
        if w[j] >= min_fraction:
            break
        share = (G * G[:, [j]]).sum(axis=0)
        share[j] = -1.0
        t = int(np.argmax(share))
        groups[t] = sorted(groups[t] + groups[j])
        del groups[j]
    return groups


def _tree(Z: np.ndarray, R: np.ndarray, shape: np.ndarray) -> list[tuple[int, int]]:
    """Bottom-up joins of the blocks (columns of R) by Ward's criterion in the mixture's shape
    metric: the join that adds least within-group spread first, n_a n_b / (n_a + n_b) times the
    squared Mahalanobis distance of the means. Small pieces join their neighbours early, so the
    pieces of one population meet before different populations do. Leaves are 0..k-1; join i
    makes node k + i."""
    k = R.shape[1]
    inv = np.linalg.inv(shape)
    w = {i: float(R[:, i].sum()) for i in range(k)}
    mu = {i: R[:, i] @ Z / w[i] for i in range(k)}
    merges: list[tuple[int, int]] = []
    nxt = k
    while len(w) > 1:
        best, pair = math.inf, (0, 0)
        keys = sorted(w)
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                diff = mu[a] - mu[b]
                cost = w[a] * w[b] / (w[a] + w[b]) * float(diff @ inv @ diff)
                if cost < best:
                    best, pair = cost, (a, b)
        a, b = pair
        w[nxt] = w[a] + w[b]
        mu[nxt] = (w[a] * mu[a] + w[b] * mu[b]) / w[nxt]
        for key in (a, b):
            del w[key], mu[key]
        merges.append((a, b))
        nxt += 1
    return merges


def _leaves(node: int, k: int, merges: list[tuple[int, int]]) -> list[int]:
    if node < k:
        return [node]
    a, b = merges[node - k]
    return _leaves(a, k, merges) + _leaves(b, k, merges)


def _weighted_median(v: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(v)
    cw = np.cumsum(w[order])
    return float(v[order][min(int(np.searchsorted(cw, 0.5 * cw[-1])), v.size - 1)])


def _biological(Z: np.ndarray, rA: np.ndarray, rB: np.ndarray, ceilings: np.ndarray | None) -> bool:
    """Whether A and B differ by >= BIOLOGY_SD pooled robust SDs in a channel where a difference
    can be biology: scatter (ceiling -inf), or a marker where one of them is above its negative
    region. Without ceilings every channel counts."""
    if ceilings is None:
        return True
    for j in range(Z.shape[1]):
        v = Z[:, j]
        ma, mb = _weighted_median(v, rA), _weighted_median(v, rB)
        sa = 1.4826 * _weighted_median(np.abs(v - ma), rA)
        sb = 1.4826 * _weighted_median(np.abs(v - mb), rB)
        sd = math.sqrt(max((sa * sa + sb * sb) / 2.0, 1e-12))
        if abs(ma - mb) >= BIOLOGY_SD * sd and max(ma, mb) > ceilings[j]:
            return True
    return False


def _final_groups(decisions: list[Decision], k: int) -> list[list[int]]:
    """The populations (lists of blocks) the live decisions leave."""
    if not decisions:
        return [list(range(k))]
    return _replayed(decisions, [d.split for d in decisions])


def _replayed(decisions: list[Decision], split: list[bool]) -> list[list[int]]:
    """Walk the recorded nodes from the root with the given split flags."""
    by_node = {
        tuple(sorted(d.left + d.right)): (d, s) for d, s in zip(decisions, split, strict=True)
    }
    out: list[list[int]] = []
    todo = [tuple(sorted(decisions[0].left + decisions[0].right))]
    while todo:
        node = todo.pop()
        entry = by_node.get(node)
        if entry is None or not entry[1]:
            out.append(list(node))
            continue
        d = entry[0]
        todo += [tuple(sorted(d.left)), tuple(sorted(d.right))]
    return out


def _count_replayed(decisions: list[Decision], split: list[bool], k: int) -> int:
    return len(_replayed(decisions, split)) if decisions else 1


__all__ = ["PopulationFinder", "Mixture", "robust_scale", "check_matrix"]
