"""Fixtures for the service tests that drive flows without a model: a seeded store, a hand-moved
clock and a FlowRunner over both."""
from __future__ import annotations

import pytest

from service.flows import FlowRunner
from tests.helpers import DEMO_ORDERS, FLOW_POLICY, Clock


@pytest.fixture
def store(make_store):
    """A seeded store, on each backend (SQLite, PostgreSQL)."""
    s = make_store()
    s.seed_orders(DEMO_ORDERS)
    return s


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def runner(store, clock):
    return FlowRunner(store, FLOW_POLICY, clock=clock)
