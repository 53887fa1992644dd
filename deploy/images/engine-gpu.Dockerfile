# The engine on a GPU host: `helpline engine` over vLLM's own CUDA image (same vLLM version as helpline's pin).
# vllm.tensor_parallel_size / pipeline_parallel_size / data_parallel_size and vllm.extra_args pass through to
# `vllm serve`; deploy/presets/gpu-8b.yaml is the one-GPU 8B preset (mount it as /app/helpline.yaml).
#   docker build -f deploy/images/engine-gpu.Dockerfile -t helpline-engine-gpu .
FROM vllm/vllm-openai:v0.32.0

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HELPLINE_WORKSPACE=/data/helpline \
    HELPLINE_VLLM__HOST=0.0.0.0 HELPLINE_VLLM__PORT=8001
WORKDIR /app
COPY pyproject.toml README.md ./
COPY helpline ./helpline
# The core only: the image's vLLM, torch and CUDA stay as vLLM built them.
RUN pip install .

EXPOSE 8001
ENTRYPOINT []
CMD ["helpline", "engine"]
