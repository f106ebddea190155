# The two commands of the README: `make run` (the main job) and `make test` (the tests).
# Both create the two environments when missing or out of date (their lock files changed) and
# reuse them otherwise.
PYTHON ?= python3
DATE ?= 2016-01-01
DAG ?= taxi_daily_retrain
VENV := .venv
RUNTIME := .venv-runtime
UV := $(VENV)/bin/uv
PYTEST_ARGS ?=

.PHONY: run test check setup chromium airflow stack stack-stop stack-packages lock clean-home serve bench-serving bench

# A live view of the tasks, then the summary; every log line goes to a file it names (VERBOSE=1: the logs).
run: setup
	$(VENV)/bin/python -m taxi_pipeline.cli run --dag $(DAG) --date $(DATE) $(if $(VERBOSE),--verbose)

# What CI runs: the check, then every slow test (end-to-end runs, Airflow services, TFT and training;
# the stack tests start PostgreSQL and Redis, installed by stack-packages when missing).
test: stack-packages check
	$(VENV)/bin/python -m pytest tests --ignore=tests/taxi_model -m slow $(PYTEST_ARGS)
	$(RUNTIME)/bin/python -m pytest tests/taxi_model -m slow $(PYTEST_ARGS)

# While working: lint, format and the fast tests (no end-to-end run, no TFT, no training).
check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest tests --ignore=tests/taxi_model -m "not slow" -n 2 $(PYTEST_ARGS)
	$(RUNTIME)/bin/python -m pytest tests/taxi_model -m "not slow" -n 2 $(PYTEST_ARGS)

setup: $(VENV)/.installed $(RUNTIME)/.installed chromium

# Debian's Chromium, driven by Playwright in the browser test of the Airflow UI (tests/plugins/test_ui_browser.py).
# Installed when missing (as root or with sudo); without it that test is skipped, everything else works.
chromium:
	@test -x /usr/bin/chromium || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && \
		$$SUDO apt-get install -y -q chromium >/dev/null; } || echo "warning: could not install chromium (the UI test will be skipped)"; }

# The Airflow environment. uv (pinned in the lock) installs the lock quickly; pip stays for `pip download`.
# --compile-bytecode: every task is a fresh process, and PYTHONDONTWRITEBYTECODE (set on this kind of
# machine) would make each one recompile its imports (~10 s a process) without the .pyc files.
$(VENV)/.installed: requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet "$$(grep '^uv==' requirements.lock)"
	$(UV) pip install --quiet --compile-bytecode --python $(VENV)/bin/python -r requirements.lock
	$(VENV)/bin/python scripts/link_sources.py $(VENV)
	touch $@

# The ML runtime (TensorFlow, TFT, TFMA, Beam): the same set as the image in docker/runtime. Synced
# exactly to the lock (no resolution: the lock is complete, and TensorFlow's CPU build stands in for
# the `tensorflow` its libraries name; docker/runtime/overrides.txt).
$(RUNTIME)/.installed: docker/runtime/requirements.lock $(VENV)/.installed
	test -x $(RUNTIME)/bin/python || $(PYTHON) -m venv $(RUNTIME)
	$(UV) pip sync --quiet --compile-bytecode --python $(RUNTIME)/bin/python docker/runtime/requirements.lock
	$(RUNTIME)/bin/python scripts/link_sources.py $(RUNTIME)
	touch $@

# The Airflow UI with the project's DAGs, on http://127.0.0.1:8080 (login printed by standalone).
airflow: setup
	$(VENV)/bin/python -m taxi_pipeline.cli airflow standalone

# Airflow as teams run it (include/taxi_pipeline/stack.py): PostgreSQL, Redis, the api-server, scheduler,
# dag-processor, triggerer and two Celery workers, on loopback, data under TAXI_HOME; Ctrl-C stops it.
stack: setup stack-packages
	$(VENV)/bin/python -m taxi_pipeline.cli stack

# From another terminal: stop the stack of this TAXI_HOME.
stack-stop:
	$(VENV)/bin/python -m taxi_pipeline.cli stack-stop

# Debian's PostgreSQL server and Redis, installed when missing (as root or with sudo).
stack-packages:
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null; } || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); $$SUDO apt-get update -q >/dev/null && \
		$$SUDO apt-get install -y -q postgresql redis-server >/dev/null; }

# Re-pin both environments after editing requirements.txt or docker/runtime/requirements.txt.
lock: $(VENV)/.installed
	$(UV) pip compile --quiet --python-version 3.11 requirements.txt -o requirements.lock
	$(UV) pip compile --quiet --python-version 3.11 docker/runtime/requirements.txt \
		--override docker/runtime/overrides.txt -o docker/runtime/requirements.lock

# Everything the local platform wrote (warehouse, artifacts, serving root, Airflow home).
# (As root, make stack's PostgreSQL cluster lives outside it, linked from stack/postgres: removed too.)
clean-home:
	@home=$${TAXI_HOME:-.taxi}; if [ -L "$$home/stack/postgres" ]; then \
		rm -rf "$$(dirname "$$(readlink "$$home/stack/postgres")")"; fi; rm -rf "$$home"

# The model server (TF-Serving's REST and gRPC APIs) on the local serving root: REST 8501, gRPC 8500.
serve: setup
	$(RUNTIME)/bin/python -m taxi_model.serving.server --serving_root $${TAXI_HOME:-$(CURDIR)/.taxi}/serving \
		--monitoring_config_file include/taxi_model/serving/monitoring.config

# Serving latency and throughput (in-process, REST, gRPC) of the model `make run` deployed; not a test.
bench-serving: setup
	$(RUNTIME)/bin/python bench/serving.py $(BENCH_ARGS)

# The benchmark suite (bench/run.py): one table, each figure beside its reference and goal; not a test.
# Parts alone: make bench FIGURES=1,3 SIZES=15000 MEMORY_SIZE=100000 (BENCH_ARGS for other options).
# SIZES: trips of each size's window, for figures 3 and 8; unset, each figure has its own default.
FIGURES ?= 1,2,3,4,5,6,7,8
SIZES ?=
MEMORY_SIZE ?= 1000000
bench: setup
	$(VENV)/bin/python bench/run.py --figures $(FIGURES) $(if $(SIZES),--sizes $(SIZES)) --memory-size $(MEMORY_SIZE) $(BENCH_ARGS)
