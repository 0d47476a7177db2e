"""The request profile (`python -m scripts.profile_request`): each part it reports is measured, not assumed."""

from __future__ import annotations

from app.serving import profiling


def test_step_costs_time_every_step_the_request_path_adds(app):
    """Each step /predict adds around the model call is timed, and every timing is a real positive duration."""
    costs = profiling.step_costs(app, repeat=20)
    assert set(costs) == {"read and decode the image", "build the LOG_EVENT", "emit it (stdout line, shipper queue)",
                          "remember it for /feedback", "Prometheus metrics", "sign the receipt", "JSON response"}
    assert all(micros > 0 for micros in costs.values())


def test_paired_rounds_answer_real_requests_and_profile_names_the_model_call(app):
    """Paired rounds send real requests (a non-200 raises); the profile names the route and the model call."""
    pairs = profiling.paired_overhead(app, rounds=2, seconds=0.1)  # raises if /predict did not answer 200
    assert len(pairs) == 2 and all(bare > 0 and request > 0 for bare, request in pairs)
    text = profiling.profile(app, n=3, top=40)
    assert "serving/routes.py" in text and "(predict)" in text and "model/vqa.py" in text and "(answer)" in text
    assert "LOG_EVENT" not in text
