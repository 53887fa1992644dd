"""Generation engines, the vLLM launcher, RAG composition, prompts and the HTTP gateway."""
