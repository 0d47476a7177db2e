"""A real Kubernetes control plane for the tests and `make cluster`: build.py builds its binaries from the
Go modules pinned in go/, cluster.py starts and stops them (etcd, API server, controllers, kwok, metrics-server).
"""
