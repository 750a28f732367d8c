"""Deterministic random streams. Every random choice in p2pk comes from a generator keyed by
the experiment seed and names (method, client, round, purpose), so each peer derives the same
numbers in any runner, any process and any order, with no coordinator."""

from __future__ import annotations

import hashlib

import numpy as np


def _key_int(key: object) -> int:
    if isinstance(key, (int, np.integer)) and key >= 0:
        return int(key)
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def seed_sequence(seed: int, *keys: object) -> np.random.SeedSequence:
    """A SeedSequence over the experiment seed and any number of int/str keys."""
    return np.random.SeedSequence([int(seed), *(_key_int(k) for k in keys)])


def rng(seed: int, *keys: object) -> np.random.Generator:
    """``numpy`` generator for (seed, *keys); e.g. ``rng(42, "ksmote", "client-a", 3, "rebalance")``."""
    return np.random.default_rng(seed_sequence(seed, *keys))


def torch_seed(seed: int, *keys: object) -> int:
    """An integer below 2**64 (what ``torch.Generator.manual_seed`` accepts) derived the same
    way: ``a + b·2**31`` from two 32-bit words of the SeedSequence."""
    return int(seed_sequence(seed, *keys).generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1, 2**31], dtype=np.uint64))
