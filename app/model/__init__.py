"""The model: the inference wrapper (`vqa.py`), its two scores (`scores.py`) and the adapter registry.

`registry.py` says which adapter is live (the `CURRENT` pointer); `hub.py` fetches real weights.
"""
