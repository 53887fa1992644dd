"""Generation engines behind one small interface."""

from helpline.serving.engines.protocol import Generation, Generator

__all__ = ["Generation", "Generator"]
