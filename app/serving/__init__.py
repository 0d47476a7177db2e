"""The web edge and serving: the app factory, routes, image loading, the model holder and metrics.

The only package that imports Flask; `/predict` is in `routes.py`.
"""
