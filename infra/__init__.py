"""Infrastructure the tests and `make up` start on this machine: a local Elasticsearch node, the supervised
stack, a Kubernetes control plane (kube/), and a git remote that runs the pipeline on push (push_remote.py).

Nothing here is part of the service; it stands up the real parts the service talks to, and keeps them up.
"""
