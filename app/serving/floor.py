"""The floor of the HTTP path: the smallest gunicorn + Flask app that answers `/predict` with the model.

It reads the JSON body and answers its question about one image decoded at start, with nothing else:
no validation, image loading, batching, events, metrics or receipts. The load benchmark
(app/serving/loadbench.py) measures it beside the service at concurrency 1 in the same paired rounds.
Its p50 minus the bare model's is what gunicorn, Flask, loopback and `hey` cost on this machine at that
moment; the service's p50 minus the floor's is what the service's own request path adds.

  gunicorn -w 1 -k gthread --threads 32 "app.serving.floor:create_app()"
"""

from __future__ import annotations

from flask import Flask, jsonify, request

from app.config import Settings

FLOOR_APP = "app.serving.floor:create_app()"
IMAGE_PATH = "test/5.png"  # the image of the benchmark's request (loadbench.SEED_REQUEST)


def create_app(settings: Settings | None = None) -> Flask:
    """The floor app: the model and one image loaded now, `/predict` and `/readyz`."""
    import torch

    from app.model.vqa import VQAModel
    from app.serving.images import load_image_file

    settings = settings or Settings.from_env()
    torch.set_num_threads(settings.torch_threads or 1)  # as a service worker: one thread unless set
    vqa = VQAModel.load(settings.model_dir, max_answer_tokens=settings.max_answer_tokens)
    image = load_image_file(settings.images_root, IMAGE_PATH)
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        pred = vqa.answer([image], [request.get_json()["question"]])[0]
        return jsonify(answer=pred.answer, quality_score=pred.quality_score, drift_score=pred.drift_score)

    @app.get("/readyz")
    def readyz():
        return jsonify(status="ok")

    return app
