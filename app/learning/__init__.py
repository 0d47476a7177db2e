"""Learning: the dataset layout, the small-model build, LoRA training, the evaluation gate and the pipeline.

One retraining reads `feedback_data.py` -> `lora.py` -> `gate.py`, run in order by `pipeline.py`.
"""
