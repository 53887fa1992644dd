"""Readers of the datasets helpline measures and trains on: BEIR and doc2dial retrieval collections,
doc2dial itself, HaluEval, Bitext. One reader each; the rows stay in ../shared/data, never here."""
