"""Fixtures of the operator tests (the fakes live in ``operator_fakes``)."""

from __future__ import annotations

import pytest
from operator_fakes import World


@pytest.fixture
def world(tmp_path) -> World:
    """A fake cluster and MinIO admin, a real directory store, and the memo wiring them."""
    return World(tmp_path)
