# Set-up is two commands on a machine with only python3: `make demo` and `make test`.
# Both install uv into .tools/ (never touching the system Python) when it is missing, sync the
# locked environment into .venv/, then run.
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --frozen

.PHONY: env demo test test-all lint bench zoo results check-results clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

env: $(if $(findstring .tools/bin/uv,$(UV)),.tools/bin/uv)
	$(UV) sync --frozen

demo: env
	$(RUN) bioattn demo

# the model zoo: trains every entry whose weights are missing or were made by other settings
# (an interrupted build resumes), then writes docs/zoo.md from the built entries' records
zoo: env
	$(RUN) bioattn zoo
	$(RUN) bioattn zoo --report docs/zoo.md

# the sources' claims measured on the zoo: docs/results.md and docs/results/
results: env
	$(RUN) bioattn results

# recompute every verdict of docs/results.md from its stored records (measures nothing)
check-results: env
	$(RUN) bioattn results --check

test: env
	$(RUN) pytest -n 2 --dist loadfile

lint: env
	$(RUN) ruff check src tests benchmarks

test-all: env
	$(RUN) pytest -n 2 --dist loadfile -m "slow or not slow"

bench: env
	$(RUN) python benchmarks/bench_absvit.py --quick
	$(RUN) python benchmarks/bench_vars.py --quick
	$(RUN) python benchmarks/bench_gfnet.py --quick
	$(RUN) python benchmarks/cli_startup.py

clean:
	rm -rf .venv .tools .pytest_cache runs demo-report
