"""Turning support conversations into versioned, scrubbed, leakage-free SFT datasets."""
