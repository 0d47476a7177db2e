"""Infrastructure the tests and `make up` start on this machine: a local Elasticsearch node, the supervised stack.

Nothing here is part of the service; it stands up the real parts the service talks to, and keeps them up.
"""
