"""helpline: a self-hosted customer-support assistant platform.

Importing this package is cheap: no torch, vllm, chromadb or streamlit is loaded until a
command or module that needs them runs.
"""

__version__ = "0.1.0"
