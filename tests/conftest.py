"""Run-wide fixtures: the small model, a real Elasticsearch node, the app and its client."""

pytest_plugins = ["tests.fixtures_es"]
