"""Generation engines behind one small interface."""

from helpline.engines.protocol import Generation, Generator

__all__ = ["Generation", "Generator"]
