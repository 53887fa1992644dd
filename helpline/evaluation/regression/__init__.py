"""Regression suites: cases with expectations, evaluators, runners and case generators."""
