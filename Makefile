# One command each for running, testing, linting and benchmarking. Each creates the
# virtualenv on first use, so a fresh clone needs nothing but Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-targets bench-faults bench-storm chaos clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# Serve on http://localhost:$${PORT:-8000}: SQLite in instance/, Redis if it answers.
run: export WEBHOOK_SECRET ?= dev-webhook-secret
run: export DEV_SIMULATE_PROVIDER ?= 1
run: export ADMIN_TOKENS ?= dev-admin-token
# Development: one machine plays every customer (flask simulate), so no per-address limits.
run: export ORDER_CREATE_RATE_LIMIT ?=
run: export WAITS_PER_CLIENT ?= 0
run: $(BIN)/.installed
	$(BIN)/flask --app wsgi db upgrade
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# The whole suite against the real Redis and a fresh PostgreSQL database (dropped after).
test: $(BIN)/.installed
	@# Bytecode for the app, which every live server the suite starts imports again (where
	@# PYTHONDONTWRITEBYTECODE is set, nothing else writes it).
	$(BIN)/python -m compileall -q app wsgi.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# BENCH_RUNS=5: that many runs, every figure as its median [min-max] (bench/series.py).
BENCH_RUNS ?= 1
bench: $(BIN)/.installed
	@if [ "$(BENCH_RUNS)" = 1 ]; then $(BIN)/python bench/longpoll.py $(BENCH_ARGS); \
	else $(BIN)/python bench/series.py --runs $(BENCH_RUNS) -- $(BENCH_ARGS); fi

bench-faults: $(BIN)/.installed
	$(BIN)/python bench/faults.py $(BENCH_ARGS)

# Every target in one table, medians of BENCH_RUNS runs (5; about 25 minutes): the shapes at
# their target sizes, against nchan, 1 worker against 2, and 40,000 waits over 4 workers.
bench-targets: BENCH_RUNS = 5
bench-targets: $(BIN)/.installed
	$(BIN)/python bench/series.py --runs $(BENCH_RUNS) -- --shapes spread,fanout,memory,sustained,scaling,host --fanout 10000 --vs-nchan $(BENCH_ARGS)

# A stopped instance's clients coming back, with and without SHUTDOWN_RECONNECT_WINDOW_MS.
bench-storm: $(BIN)/.installed
	$(BIN)/python bench/reconnect_storm.py $(STORM_ARGS)

# Ten minutes of faults under load, then the history checked (docs/RELIABILITY.md);
# CHAOS_ARGS="--seed N" replays a run's schedule.
chaos: $(BIN)/.installed
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
