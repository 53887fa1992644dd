# The staff and customer app: Streamlit talking to the gateway only (no torch, no workspace).
#   docker build -f deploy/images/ui.Dockerfile -t helpline-ui .
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 helpline
WORKDIR /app
COPY pyproject.toml README.md ./
COPY helpline ./helpline
RUN pip install '.[ui]'

USER helpline
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=5s \
  CMD python -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:8501/_stcore/health').status_code != 200)"
CMD ["helpline", "ui", "--host", "0.0.0.0", "--gateway-url", "http://gateway:8000"]
