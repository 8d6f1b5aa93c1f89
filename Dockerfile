# The elmscale image: the API, the Ray head (and sweep drivers) and the Ray workers all run it, so every
# node of a cluster has the same Python, Ray, torch and project code.
#   docker build -t elmscale .                                  # CPU torch (default)
#   docker build -t elmscale --build-arg TORCH_VARIANT=cu128 .  # CUDA 12.8 torch (bundles its CUDA libraries)
FROM python:3.11-slim

# Picks the torch wheel index like the Makefile's TORCH_INDEX: https://download.pytorch.org/whl/<variant>.
ARG TORCH_VARIANT=cpu
ARG TORCH_SPEC=torch==2.13.0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ELMSCALE_STATE_DIR=/var/lib/elmscale/state \
    ELMSCALE_DATA_DIR=/var/lib/elmscale/data \
    TORCH_EXTENSIONS_DIR=/var/lib/elmscale/torch_extensions

# g++ builds the network's C++ step loops (elm_core/csrc) with torch's JIT builder.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*

# torch first and alone: the largest layer, rebuilt only when the variant or version changes.
RUN pip install "$TORCH_SPEC" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

WORKDIR /opt/elmscale
COPY pyproject.toml README.md ./
COPY elm_core elm_core
COPY resultsdb resultsdb
COPY analysis analysis
COPY orchestrator orchestrator
COPY api api
COPY migrations migrations
RUN pip install . && python -c "import torch, ray, api.app, orchestrator.cli"
# Built here for this CPU kind; a node of another kind builds its own variant once, into the same directory.
RUN python -W error::UserWarning -c "from elm_core.step_kernels import cpu_kernel; cpu_kernel()"
COPY sweeps sweeps

# Named volumes mounted here start with this owner, so the service user can write checkpoints and outboxes.
RUN useradd --create-home --uid 1000 elmscale \
    && mkdir -p "$ELMSCALE_STATE_DIR" "$ELMSCALE_DATA_DIR" \
    && chown -R elmscale:elmscale /var/lib/elmscale
USER elmscale

EXPOSE 8000 6379
CMD ["orchestrator", "--help"]
