"""The hallucination detector: a MiniLM cross-encoder fine-tuned on HaluEval, and its evaluation."""
