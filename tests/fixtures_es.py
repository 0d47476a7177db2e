"""Pytest fixtures for a real Elasticsearch: one node per test run, plus one a test may stop.

Loaded from conftest.py through `pytest_plugins`. `ES_TEST_URL` points the run at an existing
node instead of starting one (the restartable node is always the fixture's own).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from infra.elasticsearch.launcher import ElasticsearchNode

ES_TEST_URL_ENV = "ES_TEST_URL"


@dataclass(frozen=True)
class ExternalNode:
    """A node this test run did not start (from `ES_TEST_URL`); it is never stopped."""

    url: str


@pytest.fixture(scope="session")
def es_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticsearchNode | ExternalNode]:
    """The run's Elasticsearch node (`.url`): started once on a free loopback port, stopped at the end."""
    external = os.environ.get(ES_TEST_URL_ENV, "").strip()
    if external:
        yield ExternalNode(external.rstrip("/"))
        return
    node = ElasticsearchNode(tmp_path_factory.mktemp("es-node"), port=0)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def es_url(es_node: ElasticsearchNode | ExternalNode) -> str:
    """Base URL of the run's node, e.g. http://127.0.0.1:41234."""
    return es_node.url


@pytest.fixture
def es_client(es_url: str) -> Iterator[Elasticsearch]:
    """A client of the run's node, closed after the test."""
    client = Elasticsearch(es_url, request_timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def restartable_es(tmp_path: Path) -> Iterator[ElasticsearchNode]:
    """A node of this test alone: `.stop()` and `.start()` keep its port and data (for outage tests)."""
    node = ElasticsearchNode(tmp_path / "es-restartable", port=0)
    node.start()
    try:
        yield node
    finally:
        node.stop()
