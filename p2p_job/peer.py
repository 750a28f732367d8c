"""Algorithm 2 seen from one peer, written once for every runner.

A round r has two phases, so that a runner can let every peer publish before any peer gathers:

* :meth:`Peer.train_and_publish` (DESIGN steps 1–3; Algorithm 2, lines 5–10): regenerate D_syn
  from the peer's own base data with its rebalancing method, train ``localEpochs`` on
  D_base ∪ D_syn ∪ D_o_syn, and publish the model (as a delta against w0), |D_base|,
  Var(D_base) and, when the method shares, a random α-fraction of D_syn in raw feature units.
  It is :meth:`Peer.training_task` (lines 5–7), the training engine (lines 8–10) and
  :meth:`Peer.publish_trained`; a runner that trains many peers at once
  (``p2pk simulate``'s batched engine, :func:`p2p_job.training.train_many`) calls the two
  halves itself around one engine call for all of them.
* :meth:`Peer.merge_and_evaluate` (steps 4–5; lines 12–16): when picked this round, set the
  weights to Σ p_k w_k over itself and the neighbours whose publications arrived (eq. 5–6) and
  take their shared points into D_o_syn (eq. 7); then evaluate on the local validation set and
  the global test set.

The peer knows nothing of transport (the :class:`~p2p_job.exchange.Exchange` it is handed),
files or processes: ``p2pk simulate`` drives peers in one process over a ``MemoryExchange``,
``p2pk worker`` drives one peer over the store. Every random choice is keyed by
(seed, method, client, round), so both give the same numbers (to the bit when each peer
trains alone, to float rounding when peers train stacked; see p2p_job.training).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from p2p_job.adversaries import adversary_for
from p2p_job.aggregation import (
    data_variance,
    fedavg_weights,
    is_selected,
    mixing_weights,
    share_sample,
    weighted_average,
)
from p2p_job.exchange import Exchange, Publication
from p2p_job.ksmote import NeighbourCache
from p2p_job.metrics import evaluate, fnr_by_kind
from p2p_job.model import State, build_model, initial_state, load_model_state, model_state
from p2p_job.operating import choose_threshold
from p2p_job.rebalancing import Rebalanced, rebalance
from p2p_job.received import ReceivedPolicy
from p2p_job.results import TUNED_METRICS, RoundRecord
from p2p_job.robust import robust_merge
from p2p_job.scenarios import ClientShard
from p2p_job.screening import (
    ClassRegions,
    ScreenedPoints,
    degenerate_state,
    max_variance,
    minority_of,
    point_cap,
    screen_point_sets,
    screen_weights,
)
from p2p_job.seeding import rng, torch_seed
from p2p_job.spec import AggregationRule, MethodSpec, P2PExperiment, RobustRule, resolved_method_name
from p2p_job.topology import build_topology
from p2p_job.training import TrainingTask, make_optimizer, predict_logits, predict_scores, train_local


def method_rule(exp: P2PExperiment, method: MethodSpec) -> AggregationRule:
    """The method's aggregation rule: its own, else ``spec.aggregation.rule``."""
    return method.aggregation or exp.spec.aggregation.rule


def method_robust_rule(exp: P2PExperiment, method: MethodSpec) -> RobustRule:
    """How the method combines contributors: its own ``robustRule``, else ``spec.aggregation.robustRule``."""
    return method.robust_rule or exp.spec.aggregation.robust_rule


def method_shares(method: MethodSpec) -> bool:
    """Whether the method publishes synthetic points: ``share``, by default only K-SMOTE."""
    return method.share if method.share is not None else method.rebalancing == "ksmote"


def neighbourhoods(exp: P2PExperiment, method: MethodSpec, clients: list[str]) -> dict[str, list[str]]:
    """C_sub of eq. 5 for every client: the topology's neighbours for rule ``p2p``, every other
    client for ``fedavg`` (a central server averages over all), nobody for ``local``."""
    rule = method_rule(exp, method)
    if rule == "fedavg":
        return {c: [o for o in clients if o != c] for c in clients}
    if rule == "local":
        return {c: [] for c in clients}
    return build_topology(exp.spec.topology, clients, exp.spec.seed)


def _distance(a: State, b: State) -> float:
    """L2 distance between two model states over every entry (float64)."""
    return float(np.sqrt(sum(np.sum((a[n].astype(np.float64) - b[n].astype(np.float64)) ** 2) for n in a)))


# --------------------------------------------------------------------------- observer


@dataclass(frozen=True)
class Trained:
    """Phase 1 done: ``n_generated`` = |D_syn|, ``n_shared`` = points published."""

    method: str
    client: str
    round: int
    seconds: float
    train_loss: float
    n_train: int
    n_generated: int
    n_shared: int


@dataclass(frozen=True)
class Merged:
    """Phase 2's exchange done (``selected`` false: nothing gathered). ``wait_seconds`` is the
    time spent in ``exchange.gather``; ``used`` the neighbours whose models were combined;
    ``rejected`` pairs a client with the reason its publication (by the exchange), its model or
    its whole point set was refused; ``dropped`` holds (client, reason, points) for the shared
    points a per-point check dropped (:mod:`p2p_job.screening`)."""

    method: str
    client: str
    round: int
    selected: bool
    wait_seconds: float
    used: list[str]
    missing: list[str]
    rejected: list[tuple[str, str]]
    n_received: int
    dropped: list[tuple[str, str, int]] = field(default_factory=list)


class PeerObserver(Protocol):
    """Progress and telemetry hooks (the worker hangs its Prometheus metrics on them). Called
    in order: ``trained`` at the end of phase 1, ``merged`` after phase 2's exchange (before
    evaluation), ``evaluated`` at the end of phase 2."""

    def trained(self, event: Trained) -> None: ...

    def merged(self, event: Merged) -> None: ...

    def evaluated(self, record: RoundRecord) -> None: ...


# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True)
class PeerState:
    """Everything a peer needs to resume after round ``scalars["round"]``: arrays (for
    safetensors) and JSON-able scalars. Array names: ``model.<tensor>``, ``optimizer.<i>.<key>``
    (Adam's per-parameter state), ``received.X``, ``received.y`` (D_o_syn, encoded),
    ``received.ids`` (each row's arrival number) and, for an adaptive adversary,
    ``adversary.seen.<tensor>`` (the neighbours' models it last gathered)."""

    arrays: dict[str, np.ndarray]
    scalars: dict[str, Any]


@dataclass(frozen=True)
class _Prepared:
    """What :meth:`Peer.training_task` leaves for :meth:`Peer.publish_trained`."""

    round: int
    rebalanced: Rebalanced
    n_train: int
    seconds: float


@dataclass(frozen=True)
class _Phase1:
    """What phase 1 of a round leaves for phase 2."""

    publication: Publication
    trained: Trained


def _flat_metrics(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{eval_set}_{name}": float(v) for eval_set, values in metrics.items() for name, v in values.items()}


class Peer:
    """One client of Algorithm 2 for one method. ``neighbours`` is its C_sub (see
    :func:`neighbourhoods`); ``device`` a torch device (resolve ``runtime.device`` with
    :func:`p2p_job.training.resolve_device`); ``observer`` an optional :class:`PeerObserver`."""

    def __init__(
        self,
        exp: P2PExperiment,
        method: MethodSpec,
        shard: ClientShard,
        neighbours: list[str],
        device: torch.device | str,
        observer: PeerObserver | None = None,
    ):
        spec = exp.spec
        self.exp = exp
        self.method = method
        self.shard = shard
        self.client = shard.name
        self.method_name = resolved_method_name(method, spec.aggregation.rule)
        self.rule = method_rule(exp, method)
        self.robust_rule = method_robust_rule(exp, method)
        self.shares = method_shares(method)
        self.neighbours = list(neighbours)
        self._client_specs = {c.name: c for c in spec.scenario.clients}  # what every peer knows of the others
        #: Most shared points each neighbour may publish in a round (eq. 7 bounded by the spec's counts).
        self.point_caps = {
            name: point_cap(self._client_specs[name].train.total, spec.rebalancing.share_fraction, spec.rebalancing.ratio, self.shares)
            for name in self.neighbours if name in self._client_specs
        }
        self.device = torch.device(device)
        self.observer = observer

        n_features = self.n_features = shard.train.X.shape[1]
        self.w0: State = initial_state(exp, n_features)
        #: ``spec.adversaries``: what this client publishes instead of its honest publication (None: honest).
        self.adversary = adversary_for(exp, self.method_name, shard, self.w0)
        self.model = build_model(n_features, spec.training).to(self.device)
        load_model_state(self.model, self.w0)
        self._probe = build_model(n_features, spec.training).to(self.device)  # screens neighbours' models
        self._probe_X = np.concatenate([split.X for split in self.evaluation_sets().values()])
        # The merged model's logits on _probe_X, from its degenerate check: _evaluate uses them
        # instead of scoring the same rows again.
        self._merged_logits: np.ndarray | None = None
        self.optimizer = make_optimizer(self.model, spec.training)
        self.n_base = len(shard.train.y)
        self.variance = data_variance(shard.train.X)
        self._train_low, self._train_high = shard.train.X.min(axis=0), shard.train.X.max(axis=0)  # own feature ranges
        #: The class-region point check's view of its own training rows (None: off, or nothing shared).
        self._regions = (ClassRegions(shard.train.X, shard.train.y, spec.rebalancing.class_region_tolerance)
                         if spec.rebalancing.class_region and self.shares else None)
        self.received_policy = ReceivedPolicy(spec.rebalancing, shard.train.y)
        self.received_X = np.empty((0, n_features), dtype=np.float32)  # D_o_syn, own encoding
        self.received_y = np.empty(0, dtype=np.int8)
        # Arrival numbers of the D_o_syn rows (0, 1, … over the whole run): incremental
        # checkpoints write each received point once (p2p_job.checkpoints).
        self.received_ids = np.empty(0, dtype=np.int64)
        self.next_received_id = 0
        self.last_metrics: dict[str, float] = {}
        #: Scores of the last evaluation per evaluation set (``local``, ``global``), for runners that keep them.
        self.last_scores: dict[str, np.ndarray] = {}
        train = shard.train
        self.train_kinds = () if train.kinds is None else tuple(sorted(set(train.kinds[train.y == 1].tolist())))
        self.completed_round = 0
        self.neighbour_cache = NeighbourCache()  # K-SMOTE's search over D_base's minority, fitted once
        self._prepared: _Prepared | None = None
        self._phase1: _Phase1 | None = None

    def _rng(self, r: int, purpose: str) -> np.random.Generator:
        return rng(self.exp.spec.seed, self.method_name, self.client, r, purpose)

    # ------------------------------------------------------------------ phase 1

    def training_task(self, r: int) -> TrainingTask:
        """Algorithm 2, lines 5–7: regenerate D_syn from D_base with the method and hand back
        the round's local training (D_base ∪ D_syn ∪ D_o_syn, the model and its Adam) for a
        training engine to run (lines 8–10); :meth:`publish_trained` completes phase 1."""
        spec = self.exp.spec
        start = time.perf_counter()
        base = self.shard.train
        # Line 5: D_syn is regenerated from D_base every round.
        rebalanced = rebalance(
            self.method.rebalancing, base.X, base.y, spec.rebalancing, self._rng(r, "rebalance"), self.neighbour_cache,
            tuple(self.shard.preprocessor.onehot_blocks),
        )
        # Lines 6–7: D_base ∪ D_syn ∪ D_o_syn; under rebalancing.received = balanced only the part
        # of D_syn that D_o_syn does not already fill (p2p_job.received).
        n_own = len(rebalanced.y) - len(rebalanced.synthetic_y)
        own = self.received_policy.own_synthetic(rebalanced.synthetic_y, self.received_y, self._rng(r, "fill"))
        X = np.concatenate([rebalanced.X[:n_own], rebalanced.synthetic_X[own], self.received_X])
        y = np.concatenate([rebalanced.y[:n_own], rebalanced.synthetic_y[own], self.received_y])
        self._prepared = _Prepared(r, rebalanced, len(y), time.perf_counter() - start)
        seed = torch_seed(spec.seed, self.method_name, self.client, r, "train")
        return TrainingTask(self.model, self.optimizer, X, y, seed)

    def publish_trained(self, r: int, exchange: Exchange, loss: float, train_seconds: float) -> None:
        """After the round's training (``loss``: mean loss of its last epoch; ``train_seconds``:
        this peer's share of the engine's time), publish (DESIGN step 3): the model as a delta
        against w0, |D_base|, Var(D_base) and, when the method shares, an α-fraction of D_syn."""
        if self._prepared is None or self._prepared.round != r:
            raise RuntimeError(f"{self.client}: publish_trained({r}) before training_task({r})")
        prepared, self._prepared = self._prepared, None
        spec = self.exp.spec
        start = time.perf_counter()
        rebalanced = prepared.rebalanced
        if self.shares:
            shared_X, shared_y = share_sample(
                rebalanced.synthetic_X, rebalanced.synthetic_y, spec.rebalancing.share_fraction, self._rng(r, "share")
            )
        else:
            shared_X, shared_y = rebalanced.synthetic_X[:0], rebalanced.synthetic_y[:0]
        trained = model_state(self.model)
        publication = Publication(
            client=self.client,
            round=r,
            delta={name: trained[name] - self.w0[name] for name in self.w0},
            n_base=self.n_base,
            variance=self.variance,
            synthetic_X=self.shard.preprocessor.inverse_transform(shared_X),
            synthetic_y=np.asarray(shared_y, dtype=np.int8),
            metrics=dict(self.last_metrics),
        )
        # An adversary keeps its honest publication for its own average and publishes its attack's
        # (``silent``: nothing).
        published = self.adversary(publication) if self.adversary else publication
        if published is not None:
            exchange.publish(published)
        seconds = prepared.seconds + train_seconds + time.perf_counter() - start
        trained_event = Trained(
            self.method_name, self.client, r, seconds, loss, prepared.n_train, len(rebalanced.synthetic_y), len(shared_y)
        )
        self._phase1 = _Phase1(publication, trained_event)
        if self.observer:
            self.observer.trained(trained_event)

    def train_and_publish(self, r: int, exchange: Exchange) -> None:
        """Phase 1 for this peer alone: :meth:`training_task`, :func:`train_local`,
        :meth:`publish_trained` (Algorithm 2, lines 5–10, then DESIGN step 3)."""
        task = self.training_task(r)
        start = time.perf_counter()
        loss = train_local(task.model, task.optimizer, task.X, task.y, self.exp.spec.training, self.device, task.seed)
        self.publish_trained(r, exchange, loss, time.perf_counter() - start)

    # ------------------------------------------------------------------ phase 2

    def selected(self, r: int) -> bool:
        """Algorithm 2, line 12: is this peer picked to aggregate in round r? Rule ``p2p``: with
        ``updateProbability``, a choice every peer can recompute; ``fedavg``: always; ``local``: never."""
        if self.rule == "fedavg":
            return True
        if self.rule == "local":
            return False
        return is_selected(self.exp.spec.seed, self.method_name, r, self.client, self.exp.spec.aggregation.update_probability)

    def merge_and_evaluate(self, r: int, exchange: Exchange) -> RoundRecord:
        """Algorithm 2, lines 12–16 (eq. 5–7) when selected, then evaluation (DESIGN step 5)."""
        if self._phase1 is None or self._phase1.publication.round != r:
            raise RuntimeError(f"{self.client}: merge_and_evaluate({r}) before train_and_publish({r})")
        own, trained = self._phase1.publication, self._phase1.trained
        self._phase1 = None
        start = time.perf_counter()
        merged = self._merge(r, exchange, own)
        if self.observer:
            self.observer.merged(merged)
        metrics, by_kind, threshold, tuned = self._evaluate()
        self.last_metrics = _flat_metrics(metrics)
        self.completed_round = r
        record = RoundRecord(
            experiment=self.exp.name,
            method=self.method_name,
            client=self.client,
            round=r,
            metrics=metrics,
            train_loss=trained.train_loss,
            n_train=trained.n_train,
            n_synthetic=trained.n_generated,
            n_received=merged.n_received,
            neighbours_used=len(merged.used),
            neighbours_missing=len(merged.missing),
            payloads_rejected=len(merged.rejected),
            points_rejected=sum(n for _, _, n in merged.dropped),
            aggregated=merged.selected,
            round_seconds=trained.seconds + time.perf_counter() - start,
            fnr_by_kind=by_kind,
            train_kinds=self.train_kinds,
            threshold=threshold,
            tuned=tuned,
            adversarial=self.adversary is not None,
        )
        if self.observer:
            self.observer.evaluated(record)
        return record

    def _merge(self, r: int, exchange: Exchange, own: Publication) -> Merged:
        """Lines 12–16: when selected, gather the neighbours' round-r publications, leave out
        the missing, average the models that pass the model checks (eq. 5) and take the shared
        points that pass the point checks (eq. 7). The two parts of a publication are judged
        apart: a dropped point does not refuse its model, and a refused model refuses its points
        only where ``aggregation.refuseHostilePoints`` is set and the model was refused as
        hostile: by a model check (``model-mismatch``, ``bad-weights``, ``degenerate``), left out
        of a degenerate combination, or singled out by the robust rule as an outlier
        (:attr:`p2p_job.robust.Merge.outliers`) — never for merely not being chosen. Those points
        are counted as ``hostile-sender``."""
        if not self.selected(r):
            return Merged(self.method_name, self.client, r, False, 0.0, [], [], [], 0)
        start = time.perf_counter()
        gathered = exchange.gather(r, self.neighbours)
        wait = time.perf_counter() - start
        rejected, arrived, points, dropped, hostile = list(gathered.rejected), [], {}, [], {}
        present = [name for name in self.neighbours if name in gathered.publications]
        screened_points = dict(zip(present, self._screen_points([gathered.publications[name] for name in present])))
        for name in present:
            pub = gathered.publications[name]
            reason = self._screen_model(pub)
            if reason:
                rejected.append((name, reason))
                hostile[name] = reason
            else:
                arrived.append(pub)
            screened = screened_points[name]
            if screened.refused:
                rejected.append((name, screened.refused))
            dropped.extend((name, f"{code}: {detail}", n) for code, (n, detail) in screened.dropped.items())
            points[name] = (screened.X, screened.y)
        if self.adversary:  # what an adaptive attack knows of the honest models next round
            self.adversary.observe([pub.delta for pub in arrived])
        degenerate, left_out, outliers = self._average(own, arrived)
        for name, reason in degenerate:
            rejected.append((name, reason))
            arrived = [pub for pub in arrived if pub.client != name]
        rejected.extend(left_out)
        hostile.update(degenerate)
        hostile.update((name, reason) for name, reason in left_out if name in outliers)
        if self.exp.spec.aggregation.refuse_hostile_points:
            for name, why in hostile.items():
                X, y = points[name]
                if len(y):
                    dropped.append((name, f"hostile-sender: its model was refused this round ({why})", len(y)))
                    points[name] = (X[:0], y[:0])
        n_received = self._receive(list(points.values()))
        left = {name for name, _ in left_out}
        used = [pub.client for pub in arrived if pub.client not in left]
        return Merged(self.method_name, self.client, r, True, wait, used, list(gathered.missing), rejected, n_received, dropped)

    def _screen_model(self, pub: Publication) -> str | None:
        """Why a neighbour's model is not combined (``"<reason>: <detail>"``, see
        :mod:`p2p_job.screening`), else None: tensors of another network (``model-mismatch``),
        weight inputs of eq. 6 out of bounds, or a degenerate model. Judged on that publication
        and this peer's own facts only (spec, model)."""
        if pub.delta.keys() != self.w0.keys():
            return "model-mismatch: model tensors differ"
        for name, w in self.w0.items():
            if pub.delta[name].shape != w.shape:
                return f"model-mismatch: {name} has shape {pub.delta[name].shape}, expected {w.shape}"
        counts = self._client_specs[pub.client].train
        scaling = self.exp.spec.dataset.preprocessing.scaling
        reason = screen_weights(pub.n_base, pub.variance, counts.total, max_variance(scaling))
        if reason:
            return reason
        with np.errstate(over="ignore", invalid="ignore"):
            state = {name: self.w0[name] + pub.delta[name] for name in self.w0}
        return self._degenerate(state)[0]

    def _screen_points(self, pubs: list[Publication]) -> list[ScreenedPoints]:
        """The neighbours' shared points screened (:func:`p2p_job.screening.screen_point_sets`:
        one transform into this peer's encoding for all of them) and those kept in this peer's
        encoding; points the exchange refused stay refused, points of another feature count are
        refused (``bad-synthetic``). Each publication is judged on itself and this peer's own
        facts only."""
        d = len(self.shard.preprocessor.feature_names)
        screened: list[ScreenedPoints | None] = []
        sets, at = [], []
        for pub in pubs:
            X, refused = pub.synthetic_X, pub.points_refused
            if refused is None and (X.ndim != 2 or X.shape[1] != d or len(pub.synthetic_y) != len(X)):
                refused = f"bad-synthetic: synthetic points of shape {X.shape} for {d} raw features"
            if refused:
                screened.append(ScreenedPoints(np.empty((0, self.n_features), dtype=np.float32), np.empty(0, dtype=np.int8), refused))
                continue
            counts = self._client_specs[pub.client].train
            at.append(len(screened))
            screened.append(None)
            sets.append((X, pub.synthetic_y, self.point_caps.get(pub.client, 0), minority_of(counts.benign, counts.malicious)))
        results = screen_point_sets(
            sets, transform=self.shard.preprocessor.transform, tolerance=self.exp.spec.rebalancing.point_tolerance,
            low=self._train_low, high=self._train_high, regions=self._regions,
        )
        for i, result in zip(at, results):
            screened[i] = result
        return screened

    def _degenerate(self, state: State) -> tuple[str | None, np.ndarray | None]:
        """Why ``state`` cannot be this peer's model (non-finite, a BatchNorm variance ≤ −ε/2, or
        non-finite logits on its own evaluation rows) and None; or None and those logits."""
        reason = degenerate_state(state)
        if reason is not None:
            return reason, None
        load_model_state(self._probe, state)
        logits = predict_logits(self._probe, self._probe_X, self.device)
        if not np.isfinite(logits).all():
            return "degenerate: non-finite outputs on this peer's evaluation rows", None
        return None, logits

    def _average(self, own: Publication, arrived: list[Publication]) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
        """Eq. 5 (or ``robustRule``, :mod:`p2p_job.robust`): combine the peer itself (first)
        with the neighbours that arrived, each w_k rebuilt as w0 + delta_k (the same arithmetic
        for its own model as for theirs). p_k from eq. 6 (rule ``p2p``) or |D_k|/Σ|D|
        (``fedavg``), each term capped at ``maxWeightShare``; missing ones are left out, so the
        weights renormalise over those present. A combination that would leave the model
        degenerate is not applied: the neighbour farthest from this peer's model is left out
        (and returned with reason ``degenerate``; its points go with it under ``refuseHostilePoints``) until the result is
        sound. Returns those, the neighbours whose model the rule itself left out (reason
        ``robust-rule``), and the names of those among them it singled out as outliers
        (:attr:`p2p_job.robust.Merge.outliers`)."""
        aggregation = self.exp.spec.aggregation
        dropped: list[tuple[str, str]] = []
        contributors = [own, *arrived]
        states = [{name: self.w0[name] + pub.delta[name] for name in self.w0} for pub in contributors]
        while True:
            sizes = [pub.n_base for pub in contributors]
            if self.rule == "fedavg":
                weights = fedavg_weights(sizes, aggregation.max_weight_share)
            else:
                weights = mixing_weights([pub.variance for pub in contributors], sizes, aggregation.lambda_,
                                         aggregation.max_weight_share)
            with np.errstate(over="ignore", invalid="ignore"):
                merge = robust_merge(self.robust_rule, states, weights, byzantine=aggregation.byzantine,
                                     clip_norm=aggregation.clip_norm, loss=self._validation_loss,
                                     tolerance=aggregation.validation_tolerance)
            merged = merge.state
            reason, logits = self._degenerate(merged)
            if reason is None or len(contributors) == 1:
                break
            farthest = 1 + int(np.argmax([_distance(states[0], s) for s in states[1:]]))
            dropped.append((contributors[farthest].client, f"{reason} (after combining; left out as the farthest model)"))
            del contributors[farthest], states[farthest]
        if reason is None:
            load_model_state(self.model, merged)
            self._merged_logits = logits
        left_out = [(contributors[i].client, f"robust-rule: {self.robust_rule} left its model out"
                     + (" as an outlier" if i in merge.outliers else "")) for i in merge.left_out]
        return dropped, left_out, [contributors[i].client for i in merge.outliers]

    def _validation_loss(self, state: State) -> float:
        """The class-balanced binary cross-entropy of ``state`` on this peer's validation split
        (the mean over the classes present of each class's mean loss, so that the minority
        weighs as much as the majority), infinite for non-finite outputs: the validation rule's
        score (:func:`p2p_job.robust.validation_filter`)."""
        validation = self.shard.validation
        load_model_state(self._probe, state)
        logits = predict_logits(self._probe, validation.X, self.device).astype(np.float64)
        if not np.isfinite(logits).all():
            return float("inf")
        y = np.asarray(validation.y)
        losses = np.where(y == 1, np.logaddexp(0.0, -logits), np.logaddexp(0.0, logits))
        return float(np.mean([losses[y == label].mean() for label in (0, 1) if (y == label).any()]))

    def _receive(self, points: list[tuple[np.ndarray, np.ndarray]]) -> int:
        """Eq. 7 / Algorithm 2 line 16: D_o_syn ∪ α·D_syn^k, the neighbours' points already
        encoded with this peer's own preprocessor, then bounded by ``rebalancing.received``
        (:class:`p2p_job.received.ReceivedPolicy`: newest kept)."""
        points = [(X, y) for X, y in points if len(y)]
        if not points:
            return 0
        new_X = np.concatenate([X for X, _ in points]).astype(np.float32)
        new_y = np.concatenate([y for _, y in points]).astype(np.int8)
        new_ids = np.arange(self.next_received_id, self.next_received_id + len(new_y), dtype=np.int64)
        self.next_received_id += len(new_y)
        y = np.concatenate([self.received_y, new_y])
        keep = self.received_policy.keep(y)
        self.received_X = np.concatenate([self.received_X, new_X])[keep]
        self.received_y = y[keep]
        self.received_ids = np.concatenate([self.received_ids, new_ids])[keep]
        return len(new_y)

    def evaluation_sets(self) -> dict:
        """The evaluation sets by name: ``local`` (validation) and, where the scenario has one,
        ``global`` (the global test set)."""
        sets = {"local": self.shard.validation}
        if self.shard.global_test is not None:
            sets["global"] = self.shard.global_test
        return sets

    def _evaluate(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], float, dict[str, dict[str, float]]]:
        """§5.1.2 metrics on each evaluation set at ``training.threshold``, the FNR per attack
        kind where the data names kinds, this client's own operating point (chosen on its
        validation scores, :mod:`p2p_job.operating`) and the threshold-dependent metrics of
        every set at it; the scores are kept in ``last_scores``."""
        threshold = self.exp.spec.training.threshold
        evaluation = self.exp.spec.evaluation
        sets = self.evaluation_sets()
        if self._merged_logits is not None:  # the merged model's, scored by the degenerate check
            ends = np.cumsum([len(split.y) for split in sets.values()])[:-1]
            parts = np.split(self._merged_logits, ends)
            self.last_scores = {name: torch.sigmoid(torch.from_numpy(part)).numpy() for name, part in zip(sets, parts)}
        else:
            self.last_scores = {name: predict_scores(self.model, split.X, self.device) for name, split in sets.items()}
        self._merged_logits = None
        tuned_threshold = choose_threshold(
            sets["local"].y, self.last_scores["local"], evaluation.operating_point, evaluation.target_fpr, default=threshold
        )
        metrics, by_kind, tuned = {}, {}, {}
        for name, split in sets.items():
            scores = self.last_scores[name]
            metrics[name] = evaluate(split.y, scores, threshold)
            at_own = evaluate(split.y, scores, tuned_threshold)
            tuned[name] = {m: at_own[m] for m in TUNED_METRICS}
            if split.kinds is not None:
                by_kind[name] = fnr_by_kind(split.y, scores, split.kinds, threshold)
        return metrics, by_kind, tuned_threshold, tuned

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> PeerState:
        """The peer after its last completed round, as arrays and JSON-able scalars."""
        arrays = {f"model.{name}": value for name, value in model_state(self.model).items()}
        for index, entry in self.optimizer.state_dict()["state"].items():
            for key, value in entry.items():
                arrays[f"optimizer.{index}.{key}"] = value.detach().cpu().numpy().copy()
        arrays["received.X"] = self.received_X.copy()
        arrays["received.y"] = self.received_y.copy()
        arrays["received.ids"] = self.received_ids.copy()
        if self.adversary:
            arrays.update(self.adversary.state())
        scalars = {
            "client": self.client,
            "method": self.method_name,
            "round": self.completed_round,
            "next_received_id": self.next_received_id,
            "last_metrics": dict(self.last_metrics),
        }
        return PeerState(arrays=arrays, scalars=scalars)

    def restore(self, state: PeerState) -> None:
        """Resume from :meth:`state` (taken from a peer of the same client and method)."""
        who = (state.scalars.get("client"), state.scalars.get("method"))
        if who != (self.client, self.method_name):
            raise ValueError(f"checkpoint is for client/method {who}, not {(self.client, self.method_name)}")
        arrays = state.arrays
        load_model_state(self.model, {k.removeprefix("model."): v for k, v in arrays.items() if k.startswith("model.")})
        optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in arrays.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                optimizer_state.setdefault(int(index), {})[name] = torch.from_numpy(np.array(value))
        saved = self.optimizer.state_dict()
        saved["state"] = optimizer_state
        self.optimizer.load_state_dict(saved)
        self.received_X = np.asarray(arrays["received.X"], dtype=np.float32).reshape(-1, self.n_features)
        self.received_y = np.asarray(arrays["received.y"], dtype=np.int8)
        self.received_ids = np.asarray(arrays["received.ids"], dtype=np.int64)
        self.next_received_id = int(state.scalars["next_received_id"])
        self.last_metrics = {k: float(v) for k, v in state.scalars["last_metrics"].items()}
        self.completed_round = int(state.scalars["round"])
        if self.adversary:
            self.adversary.restore(arrays)
