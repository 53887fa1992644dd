"""LLM-as-judge rubric scores of served answers (``judge.py``)."""
