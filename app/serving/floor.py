"""Floors of the HTTP path: the smallest servers that answer `/predict` with the model, for the load benchmark.

Each reads the JSON body and answers its question about one image decoded at start, with nothing else:
no validation, image loading, batching, events, metrics or receipts. The load benchmark
(app/serving/loadbench.py) measures them beside the service at concurrency 1, in the same paired rounds:

- `flask`: gunicorn (one worker of the service's class, app/serving/worker.py) and Flask, the stack the
  service runs on;
- `stdlib`: the standard library's `http.server`, one thread per connection and no framework, so a
  keep-alive client's requests never change threads.

A floor's p50 minus the bare model's is what that server, the loopback and `hey` cost on this machine at
that moment; the service's p50 minus the `flask` floor's is what the service's own request path adds.

  gunicorn -w 1 -k app.serving.worker.LingeringThreadWorker --threads 32 "app.serving.floor:create_app()"
  python -m app.serving.floor --port 8000                                   # the stdlib floor
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flask import Flask, jsonify, request

from app.config import Settings

FLOOR_APP = "app.serving.floor:create_app()"


def load_answerer(settings: Settings) -> Callable[[str], dict]:
    """question -> {answer, quality_score, drift_score} from the model on the preloaded image."""
    import torch

    from app.model.vqa import VQAModel
    from app.serving.images import load_image_file
    from app.serving.loadbench import SEED_REQUEST  # here, not at the top: loadbench imports this module

    torch.set_num_threads(settings.torch_threads or 1)  # as a service worker: one thread unless set
    vqa = VQAModel.load(settings.model_dir, max_answer_tokens=settings.max_answer_tokens)
    image = load_image_file(settings.images_root, SEED_REQUEST["image_path"])

    def answer(question: str) -> dict:
        pred = vqa.answer([image], [question])[0]
        return {"answer": pred.answer, "quality_score": pred.quality_score, "drift_score": pred.drift_score}

    return answer


def create_app(settings: Settings | None = None) -> Flask:
    """The flask floor: `/predict` and `/readyz`."""
    answer = load_answerer(settings or Settings.from_env())
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        return jsonify(answer(request.get_json()["question"]))

    @app.get("/readyz")
    def readyz():
        return jsonify(status="ok")

    return app


def stdlib_server(port: int, settings: Settings | None = None, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """The stdlib floor, bound and ready to `serve_forever()`: HTTP/1.1 keep-alive, `/predict` and `/readyz`."""
    answer = load_answerer(settings or Settings.from_env())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # the body's write must not wait for the ACK of the headers' write

        def _send(self, status: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/predict":
                return self._send(404, {"error": "not found"})
            return self._send(200, answer(json.loads(body)["question"]))

        def do_GET(self) -> None:  # noqa: N802
            self._send(200 if self.path == "/readyz" else 404, {"status": "ok"})

        def log_message(self, *args) -> None:  # one line per request would be the floor's biggest cost
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The stdlib floor server (see app/serving/floor.py).")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = stdlib_server(args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
