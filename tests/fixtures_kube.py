"""Pytest fixture for a real Kubernetes control plane (infra/kube): one cluster per test run.

Loaded from conftest.py through `pytest_plugins`. The binaries are built once into .cache/kube/bin
(`make test` does it first; here a warm build is a stamp check). HPA timings are shortened so a
scale-down is seen within a test: the controller syncs every 5 s and waits 20 s before scaling down.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.kube.build import build
from infra.kube.cluster import ClusterOptions, KubeCluster

TEST_CLUSTER_OPTIONS = ClusterOptions(hpa_sync_period="5s", hpa_downscale_stabilization="20s")


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """etcd, API server, controllers, scheduler, a kwok node and metrics-server on loopback, stopped at the end."""
    build()
    cluster = KubeCluster(tmp_path_factory.mktemp("kube"), TEST_CLUSTER_OPTIONS)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
