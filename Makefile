# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test system-packages faults-table bench bench-docs lint format install data stack-start stack-stop airflow-ui constraints clean

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP) system-packages lint
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# PostgreSQL and Redis for the CeleryExecutor test (tests/distributed), PostgreSQL for the scheduler tests
# (tests/scheduler), PostgreSQL and Chromium for the browser tests (tests/ui, driven by Playwright), from Debian, installed once when missing. The tests start their own
# servers on free loopback ports and their own headless browser; nothing here starts a service.
system-packages:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "error: the tests need$$missing; install them (sudo apt-get install$$missing) and run make test again"; exit 1; fi; \
	  echo "installing$$missing from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Benchmarks are separate from the tests: generated data, a fresh embedded stack, the results in bench/results/
# (bench/scale.py keeps its stack and its 1,000,000 objects in .stack/bench-scale/ for the next run), then
# docs/benchmarks.md from them.
bench: $(STAMP) $(VENV)/.bench-installed .venv-aws/.installed
	$(PY) bench/scheduled_runs.py
	$(PY) bench/uploads.py
	$(PY) bench/changes.py
	$(PY) bench/scale.py
	$(PY) bench/run.py
	$(PY) bench/catalog_caches.py
	$(PY) bench/bucket_copies.py
	$(PY) bench/index_rebuild.py
	$(PY) bench/docs.py

# docs/benchmarks.md from bench/results/ (a test fails when it is stale).
bench-docs: $(STAMP)
	$(PY) bench/docs.py

$(VENV)/.bench-installed: requirements-bench.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c constraints.txt
	touch $@

.venv-aws/.installed: requirements-bench-aws.txt
	test -x .venv-aws/bin/python || $(PYTHON) -m venv .venv-aws
	.venv-aws/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-bench-aws.txt
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

install: $(STAMP)

# Reinstalls only when a requirements or constraints file changed.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=python3.x)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -c constraints.txt
	-$(PY) -m pip uninstall --quiet --yes catalog-publisher 2>/dev/null  # an editable install from before the package moved
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m devstack.sample_data --data-dir data --if-missing

stack-start: $(STAMP)
	$(PY) scripts/stack.py start

stack-stop: $(STAMP)
	$(PY) scripts/stack.py stop

# The Airflow UI on the embedded stack: api-server, scheduler, dag-processor, triggerer (LocalExecutor, SQLite).
airflow-ui: $(STAMP)
	$(PY) scripts/stack.py run -- $(PY) scripts/dev_airflow.py ui

# docs/faults.md from the tests' @pytest.mark.fault markers (a test fails when it is stale).
faults-table: $(STAMP)
	$(PY) -m tests.fault_table

constraints: $(STAMP)
	{ echo "# Exact versions of everything requirements*.txt install into .venv (pip freeze); the AWS CLI for make bench lives in .venv-aws."; \
	  echo "# Regenerate with: make constraints"; $(PY) -m pip freeze --exclude-editable; } > constraints.txt

clean:
	-$(PY) scripts/stack.py stop
	rm -rf .stack .airflow
