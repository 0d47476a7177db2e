"""Simulated production: input distortions, synthetic traffic and the self-healing story.

The demo script and the end-to-end test drive the same `selfheal.run_story`.
"""
