# Training on GPU hosts: `helpline train sft|preference|distill` and `helpline improve`, one GPU or several through
# `accelerate launch` with FSDP (deploy/k8s/training-job.yaml). Reads and writes the
# workspace volume: datasets in, adapters out, registered for the gate.
#   docker build -f deploy/images/train.Dockerfile -t helpline-train .
FROM pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HELPLINE_WORKSPACE=/data/helpline
WORKDIR /app
COPY pyproject.toml README.md ./
COPY helpline ./helpline
# The image's CUDA torch stays; the rest of the training and evaluation stack on top of it, and what `helpline
# worker` needs to claim the console's jobs from the gateway database (serve: SQLAlchemy; shared: PostgreSQL's driver).
RUN pip install '.[train,eval,serve,shared]'

CMD ["helpline", "--help"]
