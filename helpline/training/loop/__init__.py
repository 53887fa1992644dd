"""The data half of `helpline improve` (#26): staff corrections and verified thumbs-up answers collected from the
gateway's log (``collect.py``), then scrubbed, deduplicated, split with held-out corrections and mixed with replay
rows of the production model's dataset (``mix.py``; the held-out answer set: ``heldout.py``)."""
