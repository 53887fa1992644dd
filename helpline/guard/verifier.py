"""The detector behind serving's ``Verifier`` hook (``RAGPipeline(verifier=...)``).

Usage in the gateway or a script::

    from helpline.guard.verifier import DetectorVerifier
    pipeline.verifier = DetectorVerifier.from_registry(registry, "helpline-detector")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from helpline.answering.rag import Verdict
from helpline.guard.detector import Detector, registered_detector_path
from helpline.platform.registry import Registry


@dataclass
class DetectorVerifier:
    """Grounded when the detector's score is under its calibrated RAG threshold."""

    detector: Detector
    threshold: float | None = None
    question: str | None = None

    @classmethod
    def from_registry(cls, registry: Registry, name: str = "helpline-detector", **kw: Any) -> DetectorVerifier:
        """Load the registered detector (int8, CPU)."""
        return cls(Detector.load(registered_detector_path(registry, name)), **kw)

    def cutoff(self) -> float:
        return self.threshold if self.threshold is not None else self.detector.threshold_for("rag")

    def verify(self, answer: str, passages: list[Any]) -> Any:
        """serving's Verdict: grounded, score (1 = fully supported), and the least supported sentence."""
        texts = [p.chunk.text if hasattr(p, "chunk") else str(p) for p in passages]
        v = self.detector.verdict(answer, texts, self.question, threshold=self.cutoff())
        worst = max(v.sentences, key=lambda s: s.score).sentence if v.sentences else answer
        reason = f"hallucination {v.score:.2f} (threshold {v.threshold:.2f}); least supported: {worst[:120]!r}"
        return Verdict(grounded=not v.hallucinated, score=round(1.0 - v.score, 4), reason=reason)
