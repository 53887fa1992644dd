"""The HTTP gateway: OpenAI-compatible chat completions with retrieval and citations."""
