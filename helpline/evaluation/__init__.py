"""Retrieval, regression and hallucination suites, the promotion gate and reports."""
