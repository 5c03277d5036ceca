# Two commands matter: `make run` (the whole stack on :9999) and `make test`.
# Both install what they need on a fresh clone.
# STORE=redis NODES=2 (make run, make chaos; `make cluster` is the short form)
# runs the scaled-out stack: N nodes over one Redis (tools/stack.py).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_DIR ?= /tmp/rinha-run
STORE  ?= memory
NODES  ?= 1
export RUN_DIR

.PHONY: install nginx redis prometheus browser run cluster stop test unit integration bench drain chaos stubs up down compose-test clean

install: $(STAMP) nginx redis prometheus browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# Debian packages, installed only when missing (needs root or sudo):
# $(call apt_install,<command>,<package>).
define apt_install
	@command -v $(1) >/dev/null 2>&1 || test -x /usr/sbin/$(1) || test -x /usr/bin/$(1) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(2) >/dev/null; }
endef

nginx:
	$(call apt_install,nginx,nginx)

# redis-server: the shared store of STORE=redis, and the store tests' server.
redis:
	$(call apt_install,redis-server,redis-server)

# prometheus and promtool (one package): the Prometheus tests, ops/prometheus/.
# Without the recommends (node-exporter and its collectors): not needed here.
prometheus:
	$(call apt_install,prometheus,--no-install-recommends prometheus)

# chromium: the dashboard's browser test (tests/integration/test_dashboard.py),
# driven by Playwright; Debian's build, never one downloaded by Playwright.
browser:
	$(call apt_install,chromium,chromium)

run: install
	$(PY) -m tools.stack run --store $(STORE) --nodes $(NODES)

# Two nodes over one Redis: node 1 on :9999, node 2 on :9998.
cluster: install
	$(PY) -m tools.stack run --store redis --nodes 2

stop:
	@$(PY) -m tools.stack stop

# Lint and types first (seconds), then every test.
test: install
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

unit: install
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration

bench: install
	$(PY) -m loadtest.bench --with-floor

# The consumer draining a 10,000-payment backlog inside its compose limits.
drain: install
	$(PY) -m loadtest.drain

# Kill and restart every service in turn under load, then check the invariants.
# FAULTS=freeze,disk,... (or all) picks other classes of fault (tools/chaos.py).
chaos: install
	$(PY) -m tools.chaos --store $(STORE) --nodes $(NODES) $(if $(FAULTS),--faults $(FAULTS))

# Regenerate the gRPC stubs from protos/ (tests fail if they are stale).
stubs: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iservices/common/rpc=protos --python_out=. --grpc_python_out=. \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=. \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=. protos/pipeline.proto

up:
	docker compose up --build

down:
	docker compose down -v

# `docker compose up` for real, for every compose file (CI runs it after
# `make test`): Debian's docker.io and docker-compose, base images built from
# a debootstrapped bookworm, the stand-ins as containers, load, one SIGKILL,
# health, OOM and memory checks, then down -v (tools/compose_check.py; root).
compose-test: $(STAMP)
	$(PY) -m tools.compose_check

clean:
	rm -rf $(VENV) .pytest_cache
