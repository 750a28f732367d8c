"""Robust aggregation: how a peer combines its own model with its neighbours' when some of
them may be hostile (an option; the paper's equation 5 weighted mean is the default).

The paper (§6) leaves robustness to poisoning as future work. Each rule here replaces the
weighted mean ``Σ_k p_k w_k`` of equation 5 over the same contributors — the peer itself first,
then the neighbours whose publications arrived — and sees their full model states (parameters
and BatchNorm running statistics alike: a hostile ``running_var`` is as harmful as a hostile
weight, and the coordinate-wise rules keep a statistic inside the range the contributors span, so
a variance stays positive when every contributor's is). ``num_batches_tracked`` is never
exchanged (``p2p_job.model``), so there is no counter to combine.

* ``mean`` — equation 5 itself, with the p_k of equation 6 (:func:`p2p_job.aggregation.weighted_average`).
* ``median`` — the coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, "Byzantine-robust
  distributed learning: towards optimal statistical rates", ICML 2018): :func:`coordinate_median`.
* ``trimmed-mean`` — the coordinate-wise mean after dropping the ``f`` largest and ``f`` smallest
  values (Yin et al. 2018, β = f/n): :func:`trimmed_mean`.
* ``clipped-mean`` — equation 5 after clipping each neighbour's difference to the peer's own
  model to a norm bound (Sun, Kairouz, Suresh, McMahan, "Can you really backdoor federated
  learning?", 2019), by default one that f hostile neighbours cannot raise (He, Karimireddy,
  Jaggi, ClippedGossip, 2022): :func:`clip_to_reference`.
* ``krum`` / ``multi-krum`` — the contributor(s) whose ``n − f − 2`` nearest others are closest
  (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine learning with adversaries: Byzantine
  tolerant gradient descent", NeurIPS 2017): :func:`krum_scores`, :func:`krum_select`; multi-Krum
  averages the ``n − f`` best with the p_k of equation 6, renormalised over them.

* ``filtered-clipped-mean`` — three steps: leave out the neighbours Krum's scores single out as
  outliers (:func:`krum_outliers`: a score far above the others'), clip each remaining
  neighbour's difference to the peer's own model **tensor by tensor** to 3 × that tensor's
  (m − f)-th smallest neighbour distance (:func:`clip_each_tensor`), and average with equation
  6's p_k (renormalised). The filter refuses the evidently hostile whole (Krum keeps one
  contributor and multi-Krum drops f every round, honest or not; on non-IID data both throw
  away honest neighbours' devices); the clipping bounds what a model that passes the filter
  can do through any one tensor — a model replacement that only lowers the output bias (one
  number) is close to the others on the whole model yet moves every score. With every
  neighbour honest and alike it is close to the paper's mean. Distance-based neighbour
  filtering before averaging is the first stage of MOZI (Guo, Zhang, Xie, Ma, Xiang, Liu,
  "Towards Byzantine-resilient learning in decentralized systems", 2020); the scores are
  Blanchard et al.'s; the clipping is ClippedGossip's self-centred clipping (He, Karimireddy,
  Jaggi 2022) applied per tensor, as per-layer clipping is in McMahan, Ramage, Talwar, Zhang,
  "Learning differentially private recurrent language models", ICLR 2018.

* ``validation`` — loss-based rejection (Fang, Cao, Jia, Gong, "Local model poisoning attacks
  to Byzantine-robust federated learning", USENIX Security 2020, §5 "LFR"), with the peer's own
  validation split as the validation set: a neighbour whose removal from the equation 5 mean
  lowers the peer's validation loss by more than ``validationTolerance`` is left out, at most
  ``f`` of them, and equation 5 averages the rest (:func:`validation_filter`). It judges each
  neighbour by what it does to this peer's own data, not by its distance to the others, so
  honest neighbours trained on other devices (non-IID) are kept.

The median, trimmed mean and Krum treat contributors alike (they ignore p_k: a self-reported
|D_k| or Var_k must not buy influence against them). Everything is pure numpy, in float64, and
returns each entry in its own dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from p2p_job.aggregation import weighted_average

State = dict[str, np.ndarray]

#: The rules of ``spec.aggregation.robustRule`` (and ``methods[].robustRule``).
RULES = ("mean", "median", "trimmed-mean", "clipped-mean", "krum", "multi-krum", "filtered-clipped-mean", "validation")


@dataclass(frozen=True)
class Merge:
    """What a rule made of the contributors: the combined ``state``, the indices of the
    contributors it ``left_out`` whole (Krum's unchosen, the validation rule's rejected), and of
    those among them it singled out as ``outliers`` — evidence of hostility, not merely "not
    chosen" (:func:`krum_outliers`; every one the validation rule rejects, each having raised the
    peer's validation loss beyond the tolerance). The peer itself, index 0, is never reported."""

    state: State
    left_out: tuple[int, ...] = ()
    outliers: tuple[int, ...] = ()


def _check(states: list[State]) -> list[str]:
    if not states:
        raise ValueError("robust aggregation needs at least one state")
    names = list(states[0])
    for i, state in enumerate(states):
        if state.keys() != states[0].keys():
            raise ValueError(f"state {i} has entries {sorted(state)}; state 0 has {sorted(names)}")
        for name in names:
            if np.shape(state[name]) != np.shape(states[0][name]):
                raise ValueError(f"entry {name!r}: state {i} has shape {np.shape(state[name])}, state 0 {np.shape(states[0][name])}")
    return names


def _restore(name: str, values: np.ndarray, like: np.ndarray) -> np.ndarray:
    like = np.asarray(like)
    if np.issubdtype(like.dtype, np.integer):
        values = np.rint(values)
    return values.astype(like.dtype)


def _coordinate_wise(states: list[State], combine) -> State:
    names = _check(states)
    out = {}
    for name in names:
        stacked = np.stack([np.asarray(s[name], dtype=np.float64) for s in states])
        out[name] = _restore(name, combine(stacked), states[0][name])
    return out


def coordinate_median(states: list[State]) -> State:
    """Coordinate-wise median over the contributors (Yin et al. 2018, "median-based"); with an
    even count, the mean of the two middle values (numpy's median)."""
    return _coordinate_wise(states, lambda stacked: np.median(stacked, axis=0))


def trimmed_mean(states: list[State], trim: int) -> State:
    """Coordinate-wise β-trimmed mean (Yin et al. 2018): per coordinate, drop the ``trim``
    largest and ``trim`` smallest values and average the rest. When fewer than ``2·trim + 1``
    contributors are there (neighbours missing), trim ``(n − 1) // 2`` per side: the median."""
    if trim < 0:
        raise ValueError(f"trim must be >= 0; got {trim}")
    n = len(states)
    cut = min(trim, (n - 1) // 2)
    return _coordinate_wise(states, lambda stacked: np.sort(stacked, axis=0)[cut:n - cut].mean(axis=0))


def _flat(states: list[State]) -> np.ndarray:
    names = _check(states)
    return np.stack([np.concatenate([np.asarray(s[name], dtype=np.float64).ravel() for name in names]) for s in states])


def clip_to_reference(states: list[State], max_norm: float | None = None, reference: int = 0, *,
                      byzantine: int = 1, margin: float = 1.0) -> list[State]:
    """Norm clipping (Sun et al. 2019): every contributor's difference to ``states[reference]``
    (the peer's own model) is scaled down to at most τ in L2 norm over all entries:
    ``w_ref + (w_k − w_ref) · min(1, τ / ‖w_k − w_ref‖)``. Sun et al. clip to a fixed bound: that is
    ``max_norm`` (``aggregation.clipNorm``), which wins when given.

    ``max_norm`` None: τ is the (m − f)-th smallest of the m other contributors' distances
    (at least the smallest), f = ``byzantine``: the self-centred clipping of ClippedGossip (He,
    Karimireddy, Jaggi, "Byzantine-robust decentralized learning via ClippedGossip", 2022), whose
    authors' code (epfml/byzantine-robust-decentralized-optimizer, ``SelfCenteredClipping``) takes
    τ adaptively as the second largest neighbour distance — this rule at f = 1 — generalised to f
    by clipping the f farthest. At most f of the m are hostile, so at least m − f distances are
    honest and τ is at most the largest honest one: hostile neighbours, however far, cannot raise
    it past an honest neighbour's. (A median does not have this property with two neighbours, a
    ring's: numpy's median of two is their mean, and one attacker at distance D raised τ to about
    D/2.) f = 0 trusts every neighbour: τ is the largest distance and nothing is clipped,
    equation 5 itself. f ≥ m (e.g. a lone neighbour, the other's publication missing): τ is the
    smallest distance, so a lone neighbour is not clipped — no bound can tell it from an honest
    one there. ``margin`` multiplies that adaptive τ (:func:`clip_each_tensor` uses 3).
    Each clipped state lies on the segment between the reference and the contributor, so
    BatchNorm variances stay positive when both ends' are."""
    if max_norm is not None and not max_norm > 0:
        raise ValueError(f"max_norm must be > 0; got {max_norm}")
    if byzantine < 0:
        raise ValueError(f"byzantine must be >= 0; got {byzantine}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0; got {margin}")
    names = _check(states)
    flat = _flat(states)
    distances = np.linalg.norm(flat - flat[reference], axis=1)
    others = np.sort(np.delete(distances, reference))
    tau = max_norm if max_norm is not None else margin * (float(others[max(1, others.size - byzantine) - 1]) if others.size else 0.0)
    clipped = []
    for k, state in enumerate(states):
        scale = 1.0 if k == reference or distances[k] <= tau else tau / distances[k]
        clipped.append({
            name: _restore(name, np.asarray(states[reference][name], np.float64)
                           + scale * (np.asarray(state[name], np.float64) - np.asarray(states[reference][name], np.float64)),
                           state[name])
            for name in names
        })
    return clipped


#: :func:`clip_each_tensor` clips a tensor to this many times its (m − f)-th smallest neighbour
#: distance. Measured (docs/robustness.md, built-in non-IID data, ten seeds): at 1 the farther of
#: a ring peer's two honest neighbours is pulled to the nearer one's distance in every tensor,
#: which raised the clean ring's FPR by 0.03 over the paper's mean; at 3 honest neighbours are
#: rarely clipped, and an output-bias replacement that passes the outlier filter still moves
#: the honest rates by at most 0.02.
TENSOR_CLIP_FACTOR = 3.0


def clip_each_tensor(states: list[State], reference: int = 0, *, byzantine: int = 1,
                     factor: float = TENSOR_CLIP_FACTOR) -> list[State]:
    """:func:`clip_to_reference` entry by entry: each contributor's difference to
    ``states[reference]`` in one tensor is clipped to ``factor`` × that tensor's (m − f)-th
    smallest neighbour distance τ_t, so no contributor moves any one tensor much farther than
    an honest neighbour does, whatever it does elsewhere (a tensor with τ_t = 0, every
    neighbour but f equal to the reference there, is clipped to 0). Each clipped entry lies on
    the segment between the reference's and the contributor's, so BatchNorm variances stay
    positive."""
    names = _check(states)
    per_entry = {name: clip_to_reference([{name: s[name]} for s in states], None, reference, byzantine=byzantine, margin=factor)
                 for name in names}
    return [{name: per_entry[name][k][name] for name in names} for k in range(len(states))]


def krum_scores(states: list[State], byzantine: int) -> np.ndarray:
    """Krum's score of each contributor (Blanchard et al. 2017): the sum of squared distances to
    its ``n − f − 2`` nearest other contributors (at least 1, at most ``n − 1``). Lower is more
    central. The guarantee of the paper needs ``n > 2f + 2``; below it the score still ranks."""
    flat = _flat(states)
    n = len(flat)
    if n == 1:
        return np.zeros(1)
    squared = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=2)
    closest = min(n - 1, max(1, n - byzantine - 2))
    return np.array([np.sort(np.delete(squared[k], k))[:closest].sum() for k in range(n)])


def krum_select(scores: np.ndarray, keep: int) -> list[int]:
    """Indices of the ``keep`` contributors with the lowest Krum ``scores`` (:func:`krum_scores`;
    ties: the lower index, so the peer itself wins a tie), in ascending index order."""
    order = np.argsort(scores, kind="stable")
    return sorted(int(i) for i in order[:max(1, keep)])


#: A Krum score this many times the median of the ``n − f`` lowest marks an outlier. Measured on
#: the built-in data, seed 7, 10 rounds (docs/robustness.md): with every contributor honest the
#: worst score was at most 3.3× the median of the others' (non-IID, full mesh), 4.4× (non-IID,
#: ring), 3.7× (IID, full mesh); a sign-flipped or replaced model's mostly 20–3,600× once the
#: deltas have grown past the first rounds.
KRUM_OUTLIER_RATIO = 10.0


def krum_outliers(scores: np.ndarray, byzantine: int, ratio: float = KRUM_OUTLIER_RATIO) -> list[int]:
    """The contributors Krum singles out as hostile, not merely leaves unchosen: among the
    ``byzantine`` (f) worst-scored, those whose score exceeds ``ratio`` × the median score of the
    ``n − f`` best, never the peer itself (index 0). With every contributor honest the scores of
    non-IID neighbours differ by a small factor, so none is; an honest neighbour Krum did not
    choose is not an outlier. Ascending indices."""
    n = len(scores)
    if byzantine <= 0 or n - byzantine < 1:
        return []
    order = np.argsort(scores, kind="stable")
    typical = float(np.median(scores[order[:n - byzantine]]))
    return sorted(int(k) for k in order[n - byzantine:] if k != 0 and scores[k] > ratio * typical)


def validation_filter(states: list[State], weights, loss: Callable[[State], float], *, tolerance: float,
                      most: int) -> list[int]:
    """Fang et al. 2020's loss function based rejection (LFR), thresholded, over the equation 5
    mean: with L(S) the validation ``loss`` of the p_k-weighted mean over the contributors S
    (weights renormalised over S), the neighbour k ∈ S whose removal lowers it most is left
    out when ``L(S) − L(S ∖ {k}) > tolerance``; then again over what is left, at most ``most``
    times (f). The peer itself (index 0) is never left out. Fang et al. remove a fixed count c;
    the threshold keeps every neighbour when none does harm, which a fixed count cannot on
    non-IID data. Returns the kept indices, ascending."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0; got {tolerance}")
    weights = np.asarray(weights, dtype=np.float64)
    kept = list(range(len(states)))

    def mean_loss(members: list[int]) -> float:
        value = float(loss(weighted_average([states[i] for i in members], weights[members])))
        return value if np.isfinite(value) else np.inf

    for _ in range(most):
        if len(kept) == 1:
            break
        full = mean_loss(kept)
        drops = []
        for k in kept[1:]:
            drop = full - mean_loss([i for i in kept if i != k])
            drops.append((drop if not np.isnan(drop) else -np.inf, k))  # infinite on both sides: no evidence
        drop, worst = max(drops, key=lambda d: (d[0], -d[1]))  # ties: the lower index
        if not drop > tolerance:
            break
        kept.remove(worst)
    return kept


def robust_merge(rule: str, states: list[State], weights, *, byzantine: int = 1, clip_norm: float | None = None,
                 loss: Callable[[State], float] | None = None, tolerance: float = 0.0) -> Merge:
    """Combine ``states`` (the peer's own first) with ``rule`` of :data:`RULES`; ``weights``
    are equation 6's p_k (used by ``mean``, ``clipped-mean``, ``multi-krum``, ``filtered-clipped-mean``
    and ``validation``), ``byzantine`` the number f of hostile contributors the rule should
    withstand; ``loss`` (a state's loss on the peer's validation split) and ``tolerance`` are
    the validation rule's."""
    weights = np.asarray(weights, dtype=np.float64)
    if rule == "mean":
        return Merge(weighted_average(states, weights))
    if rule == "median":
        return Merge(coordinate_median(states))
    if rule == "trimmed-mean":
        return Merge(trimmed_mean(states, byzantine))
    if rule == "clipped-mean":
        return Merge(weighted_average(clip_to_reference(states, clip_norm, byzantine=byzantine), weights))
    if rule == "filtered-clipped-mean":
        outliers = tuple(krum_outliers(krum_scores(states, byzantine), byzantine))
        kept = [i for i in range(len(states)) if i not in outliers]
        clipped = clip_each_tensor([states[i] for i in kept], byzantine=byzantine)
        return Merge(weighted_average(clipped, weights[kept]), outliers, outliers)
    if rule in ("krum", "multi-krum", "validation"):
        if rule == "validation":
            if loss is None:
                raise ValueError("the validation rule needs a loss")
            chosen = validation_filter(states, weights, loss, tolerance=tolerance, most=byzantine)
            left_out = tuple(i for i in range(1, len(states)) if i not in chosen)
            outliers = left_out
        else:
            scores = krum_scores(states, byzantine)
            chosen = krum_select(scores, 1 if rule == "krum" else len(states) - byzantine)
            left_out = tuple(i for i in range(1, len(states)) if i not in chosen)
            outliers = tuple(krum_outliers(scores, byzantine))
        if rule == "krum":
            return Merge(dict(states[chosen[0]]), left_out, outliers)
        return Merge(weighted_average([states[i] for i in chosen], weights[chosen]), left_out, outliers)
    raise ValueError(f"unknown robust rule {rule!r}; expected one of {', '.join(RULES)}")
