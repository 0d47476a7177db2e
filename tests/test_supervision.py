"""Background loops of the service come back after a crash, and /readyz names what happened."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from app.model.registry import promote_adapter
from app.model.scores import REFERENCE_FILE
from app.serving.service import ModelHolder


def _wait(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_crash_of_the_reload_loops_first_attempt_is_logged_and_the_loop_recovers(app, client, settings,
                                                                                   tiny_adapter, monkeypatch,
                                                                                   caplog):
    """The reload poll raises once: the traceback is logged, /readyz says the loop crashed and restarted,
    and a promoted adapter is then picked up as usual."""
    real, calls = ModelHolder.reload_if_changed, []

    def crashes_first(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("poll blew up")
        return real(self)

    monkeypatch.setattr(ModelHolder, "reload_if_changed", crashes_first)
    assert _wait(lambda: len(calls) >= 1)
    assert _wait(lambda: client.get("/readyz").get_json()["checks"]["adapter_reload"]["status"] == "degraded")
    detail = client.get("/readyz").get_json()["checks"]["adapter_reload"]["detail"]
    assert "RuntimeError: poll blew up" in detail and "restarted" in detail
    assert "background loop adapter-reload crashed" in caplog.text
    shutil.copytree(tiny_adapter, f"{settings.adapters_dir}/adapter-tiny")
    promote_adapter(settings.adapters_dir, f"{settings.adapters_dir}/adapter-tiny")
    assert _wait(lambda: client.get("/readyz").get_json().get("adapter_version") == "adapter-tiny")


def test_a_malformed_adapter_keeps_the_old_model_serving_and_the_next_good_one_loads(app, client, settings,
                                                                                    tiny_adapter):
    """An adapter whose drift reference lacks a key (KeyError, not OSError/ValueError) is refused; requests go
    on being answered by the old model; the loop keeps watching and loads the next good adapter."""
    broken = Path(shutil.copytree(tiny_adapter, f"{settings.adapters_dir}/adapter-broken"))
    (broken / REFERENCE_FILE).write_text(json.dumps({"std": [1.0], "count": 1}))
    promote_adapter(settings.adapters_dir, broken)
    assert _wait(lambda: "last reload failed" in client.get("/readyz").get_json()["checks"]["model"]["detail"])
    answered = client.post("/predict", json={"image_path": "test/0.png", "question": "what color is the shape?"})
    assert answered.status_code == 200 and answered.get_json()["adapter_version"] == "none"
    good = Path(shutil.copytree(tiny_adapter, f"{settings.adapters_dir}/adapter-good"))
    promote_adapter(settings.adapters_dir, good)
    assert _wait(lambda: app.extensions["vqa"].models.loaded_adapter == good)
    ready = client.get("/readyz").get_json()
    assert ready["adapter_version"] == "adapter-tiny"  # the version its metadata file names
    assert "last reload failed" not in ready["checks"]["model"]["detail"]
    assert client.get("/readyz").get_json()["checks"]["adapter_reload"]["status"] == "ok"
