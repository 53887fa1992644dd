"""Contract suites: one per Protocol, each run against the fake and every real implementation.

Each module holds a ``...Contract`` class of test methods (what the rest of helpline relies on from that
part) and one subclass per implementation that overrides only the fixture, as haystack's document-store
tests do. Subclasses over fakes run in the default tier; those over real models are marked ``integration``.
"""
