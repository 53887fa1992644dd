"""A merged checkpoint as GGUF files (F16 and Q8_0) for llama.cpp and Ollama, checked by reading them back."""
