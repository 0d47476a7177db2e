"""A WSGI app that answers whether its request came to a lingering thread (for tests/test_worker.py)."""

from app.serving.worker import lingered


def app(environ, start_response):
    body = b"lingered" if lingered() else b"handed-off"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
