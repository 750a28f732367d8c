"""Attacks as an experiment feature: clients named in ``spec.adversaries`` misbehave on the
publishing side, so the same attack runs under ``p2pk simulate``, ``p2pk run`` and Kubernetes.

An adversary trains honestly (Algorithm 2, lines 5–9), keeps its honest model for its own
average, and publishes (DESIGN step 3) what its attack makes of the honest
:class:`~p2p_job.exchange.Publication`: :class:`Adversary` is applied by
:meth:`p2p_job.peer.Peer.publish_trained` just before ``exchange.publish``, so there is no
second copy of the round logic. From ``fromRound`` on, every random draw comes from
``rng(seed, method, client, round, "adversary")``: an attack is reproducible in any runner.

On the model (what a robust aggregation rule must withstand):

- ``scaled-delta``: delta × factor (default 10) — a boosted update (Bhagoji et al., ICML 2019).
- ``sign-flip``: delta × −factor (default 1) — the sign-flipping attack (Li et al., RSA, AAAI 2019).
- ``model-replacement``: the honest model with its output bias lowered by ``factor`` (default 10:
  every score tends to benign), the change boosted by γ = the number of clients so that a plain
  average over the neighbourhood lands on it — X̃ = G + γ(X − G) with G ≈ the attacker's own
  model (Bagdasaryan et al., "How to backdoor federated learning", AISTATS 2020).
- ``gaussian-noise``: the delta replaced by N(0, factor²) per entry (default σ = 1) — the
  Gaussian Byzantine of Blanchard et al., "Machine learning with adversaries" (Krum), NIPS 2017.
- ``inflated-n-base``: |D_base| × factor (default 1000): the weight input of eq. 6 that decides
  the attacker's share of every average.
- ``a-little-is-enough``: per entry μ − z·σ with z = ``factor`` (default 1), μ and σ the mean
  and standard deviation over the honest models the attacker knows: its own honest model of the
  round and the neighbours' models it gathered (and that passed its model checks) in its last
  aggregation — a shift small enough per entry to hide among honest models, in the same
  direction in every entry (Baruch, Baruch, Goldberg, "A little is enough: circumventing
  defenses for distributed learning", NeurIPS 2019). The paper's z_max = Φ⁻¹((n − s)/n), s =
  ⌊n/2 + 1⌋ − m, is 0 for a neighbourhood of four with one attacker (n = 4, m = 1) and 0.43 for
  a ring's three (n = 3), hence a fixed default of 1. Non-omniscient: the neighbours' models are
  the previous round's, the only ones a peer has when it publishes; until it has gathered any it
  publishes honestly. What it gathered is part of its checkpoint, so a restarted attacker goes
  on as the one in ``p2pk simulate``.

Neither (a baseline for the others):

- ``silent``: publishes nothing (an omission fault: a crashed or free-riding peer). Its
  neighbours lose its model and its shared points alike, which is what a defence that refuses
  every publication of an attacker costs them at best; ``benchmarks/bench_attacks.py`` reports
  it beside the clean run. Under ``p2pk run`` each neighbour waits ``roundTimeoutSeconds`` for
  it every round.

On the shared points (eq. 7; what shared-point sanitisation must withstand), all in raw units:

- ``label-flip``: ``points`` (default: as many as its honest publication shares, so that only
  the labels give it away) of its own training rows, drawn with replacement, labels flipped
  (Tolpegin et al., "Data poisoning attacks against FL systems", ESORICS 2020).
- ``majority-flip``: the same, drawn from its majority-class (benign) rows only and labelled
  with its minority class: a label flip that passes the label check (every point carries the
  label the spec expects), which only the class-region check (``p2p_job.screening``) can see.
- ``out-of-range``: ``points`` (default: as many as it would share honestly) random points from 0.5 to 1 × ``factor`` (default
  1000) in its own encoded (min-max scaled) units, mapped back to raw units, labelled with its
  minority class.
- ``flooding``: ``points`` (default 20000) of its own minority-class training rows, drawn with
  replacement, correctly labelled: only the count is hostile.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from p2p_job.exchange import Publication
from p2p_job.model import State
from p2p_job.scenarios import ClientShard
from p2p_job.seeding import rng
from p2p_job.spec import AdversarySpec, P2PExperiment

#: Default ``factor`` and ``points`` of each attack (``spec.adversaries[].factor`` / ``.points``).
DEFAULTS: dict[str, tuple[float | None, int | None]] = {
    "scaled-delta": (10.0, None),
    "sign-flip": (1.0, None),
    "model-replacement": (10.0, None),
    "gaussian-noise": (1.0, None),
    "inflated-n-base": (1000.0, None),
    "a-little-is-enough": (1.0, None),
    "label-flip": (None, None),     # None: as many points as the honest publication shares
    "majority-flip": (None, None),
    "out-of-range": (1000.0, None),
    "flooding": (None, 20000),
    "silent": (None, None),
}


class Adversary:
    """One client's attack: ``adversary(publication)`` is what it publishes instead of the honest
    ``publication`` (unchanged before ``fromRound``). ``shard`` is the client's own data (raw rows,
    and its preprocessor maps encoded points to raw units), ``w0`` the initial weights (names the output layer),
    ``n_clients`` the boost of model replacement."""

    def __init__(self, spec: AdversarySpec, exp: P2PExperiment, method: str, shard: ClientShard, w0: State):
        default_factor, default_points = DEFAULTS[spec.attack]
        self.spec = spec
        self.factor = spec.factor if spec.factor is not None else default_factor
        self.points = spec.points if spec.points is not None else default_points
        self.seed, self.method, self.shard = exp.spec.seed, method, shard
        self.output_bias = list(w0)[-1]  # the last Linear's bias: one logit
        self.n_clients = len(exp.spec.scenario.clients)
        self._attack: Callable[[Adversary, Publication, np.random.Generator], Publication | None] = ATTACKS[spec.attack]
        #: The neighbours' models (deltas against w0) of its last aggregation, each tensor stacked
        #: over neighbours: what an attack that adapts to the honest models knows of them.
        self.seen: dict[str, np.ndarray] = {}

    @property
    def client(self) -> str:
        return self.shard.name

    def __call__(self, pub: Publication) -> Publication | None:
        """What the client publishes in ``pub.round`` (None: nothing)."""
        if pub.round < self.spec.from_round:
            return pub
        return self._attack(self, pub, rng(self.seed, self.method, self.client, pub.round, "adversary"))

    def observe(self, deltas: list[dict[str, np.ndarray]]) -> None:
        """The neighbours' models (deltas against w0) that passed its model checks in this
        round's aggregation; kept only by the attacks that adapt to them (:data:`ADAPTIVE`)."""
        if self.spec.attack in ADAPTIVE and deltas:
            self.seen = {name: np.stack([d[name] for d in deltas]).astype(np.float32) for name in deltas[0]}

    def state(self) -> dict[str, np.ndarray]:
        """What :meth:`observe` kept, as checkpoint arrays (``adversary.seen.<tensor>``)."""
        return {f"adversary.seen.{name}": value for name, value in self.seen.items()}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back :meth:`state` from a checkpoint's arrays."""
        prefix = "adversary.seen."
        self.seen = {k.removeprefix(prefix): np.asarray(v, np.float32) for k, v in arrays.items() if k.startswith(prefix)}

    # ------------------------------------------------------------------ helpers

    def _count(self, pub: Publication) -> int:
        """``points``, else as many as the honest publication shares (at least one)."""
        return self.points if self.points is not None else max(1, len(pub.synthetic_y))

    def _own_rows(self, count: int, gen: np.random.Generator, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``count`` of its training rows (of class ``label`` when given) drawn with replacement, raw units."""
        train = self.shard.train
        pool = np.flatnonzero(train.y == label) if label is not None else np.arange(len(train.y))
        if len(pool) == 0:
            pool = np.arange(len(train.y))
        rows = gen.choice(pool, size=count, replace=True)
        return train.raw[rows].astype(np.float32), train.y[rows].astype(np.int8)

    def _minority(self) -> int:
        y = self.shard.train.y
        return int(np.count_nonzero(y == 1) <= np.count_nonzero(y == 0))


def _scaled_delta(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    return replace(pub, delta={k: (v * np.float32(adv.factor)).astype(np.float32) for k, v in pub.delta.items()})


def _sign_flip(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    return replace(pub, delta={k: (v * np.float32(-adv.factor)).astype(np.float32) for k, v in pub.delta.items()})


def _model_replacement(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    delta = dict(pub.delta)
    delta[adv.output_bias] = (delta[adv.output_bias] - np.float32(adv.n_clients * adv.factor)).astype(np.float32)
    return replace(pub, delta=delta)


def _gaussian_noise(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    return replace(pub, delta={k: gen.normal(0.0, adv.factor, v.shape).astype(np.float32) for k, v in pub.delta.items()})


def _inflated_n_base(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    return replace(pub, n_base=int(round(pub.n_base * adv.factor)))


def _a_little_is_enough(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    if not adv.seen:  # no neighbour's model gathered yet: nothing to hide among
        return pub
    delta = {}
    for name, own in pub.delta.items():
        models = np.concatenate([adv.seen[name], own[None]])
        delta[name] = (models.mean(axis=0) - np.float32(adv.factor) * models.std(axis=0)).astype(np.float32)
    return replace(pub, delta=delta)


def _label_flip(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    X, y = adv._own_rows(adv._count(pub), gen)
    return replace(pub, synthetic_X=X, synthetic_y=(1 - y).astype(np.int8))


def _majority_flip(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    minority = adv._minority()
    X, _ = adv._own_rows(adv._count(pub), gen, label=1 - minority)
    return replace(pub, synthetic_X=X, synthetic_y=np.full(len(X), minority, dtype=np.int8))


def _out_of_range(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    d = adv.shard.train.X.shape[1]  # encoded features
    n = adv._count(pub)
    encoded = gen.uniform(0.5 * adv.factor, adv.factor, (n, d)).astype(np.float32)
    X = adv.shard.preprocessor.inverse_transform(encoded)
    return replace(pub, synthetic_X=X, synthetic_y=np.full(n, adv._minority(), dtype=np.int8))


def _flooding(adv: Adversary, pub: Publication, gen: np.random.Generator) -> Publication:
    X, y = adv._own_rows(adv.points, gen, label=adv._minority())
    return replace(pub, synthetic_X=X, synthetic_y=y)


def _silent(adv: Adversary, pub: Publication, gen: np.random.Generator) -> None:
    return None


#: The transform of each attack kind (None: publish nothing).
ATTACKS: dict[str, Callable[[Adversary, Publication, np.random.Generator], Publication | None]] = {
    "scaled-delta": _scaled_delta,
    "sign-flip": _sign_flip,
    "model-replacement": _model_replacement,
    "gaussian-noise": _gaussian_noise,
    "inflated-n-base": _inflated_n_base,
    "a-little-is-enough": _a_little_is_enough,
    "label-flip": _label_flip,
    "majority-flip": _majority_flip,
    "out-of-range": _out_of_range,
    "flooding": _flooding,
    "silent": _silent,
}


#: The attacks that adapt to the neighbours' models they gather (:meth:`Adversary.observe`).
ADAPTIVE = ("a-little-is-enough",)


def adversary_for(exp: P2PExperiment, method: str, shard: ClientShard, w0: State) -> Adversary | None:
    """The client's :class:`Adversary` when ``spec.adversaries`` names it, else None (honest)."""
    for spec in exp.spec.adversaries:
        if spec.client == shard.name:
            return Adversary(spec, exp, method, shard, w0)
    return None


def adversarial_clients(exp: P2PExperiment) -> set[str]:
    """The clients ``spec.adversaries`` names."""
    return {a.client for a in exp.spec.adversaries}
