# The entry points for people and CI. Everything runs from ./.venv, which
# these targets create; a fresh machine needs only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test check lint format scan audit lock fuzz bench clean docs-assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstalled when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./clients/python
	touch $(VENV)/.installed $@

# openapi-python-client, for tests/test_generated_client.py: a client generated
# from /openapi.json must work. A venv of its own: it pins typer<0.28, keyhouse
# needs typer>=0.29. python-dateutil: what the generated client imports.
CLIENTGEN := $(VENV)/clientgen
$(CLIENTGEN)/.installed: | $(BIN)/python
	$(PYTHON) -m venv $(CLIENTGEN)
	$(CLIENTGEN)/bin/python -m pip install --quiet 'openapi-python-client==0.29.1' \
		'python-dateutil==2.9.0.post0'
	touch $@

# openapi-typescript, openapi-fetch and tsc, for tests/clients/test_typescript_client.py:
# a TypeScript client generated from /openapi.json must work. Pinned in
# package-lock.json; installed again when it changes. Only where npm is: without
# node the test skips (and fails with CI=true).
TSCLIENT := tests/clients/typescript
$(TSCLIENT)/node_modules/.installed: $(TSCLIENT)/package-lock.json
	cd $(TSCLIENT) && npm ci --no-audit --no-fund --silent
	touch $@
NODE_TEST_DEPS := $(if $(shell command -v npm 2>/dev/null),$(TSCLIENT)/node_modules/.installed)

serve: $(VENV)/.installed
	$(BIN)/keyhouse serve --host $(HOST) --port $(PORT)

check: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests fuzz clients/python
	$(BIN)/ruff format --check src tests fuzz clients/python
	$(BIN)/mypy
	$(BIN)/mypy fuzz
	$(BIN)/mypy clients/python/src clients/python/examples

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests fuzz clients/python
	$(BIN)/ruff format src tests fuzz clients/python

test: check scan $(CLIENTGEN)/.installed $(NODE_TEST_DEPS)
	$(BIN)/pytest $(PYTEST_ARGS)

# Static security scan: no medium or high finding in src (offline).
scan: $(VENV)/.installed-dev
	$(BIN)/bandit -r src -ll -q

# Known vulnerabilities in the locked dependencies (requirements.lock), from
# PyPI's JSON API. --strict: a package the service cannot answer for fails the
# audit instead of being skipped. .pip-audit-ignore lists the vulnerabilities
# that do not apply (an ID and the reason, one a line). Needs the network.
audit: $(VENV)/.installed-dev
	$(BIN)/pip-audit --requirement requirements.lock --no-deps --disable-pip --strict \
		--progress-spinner off \
		$$(sed -e 's/#.*//' .pip-audit-ignore | awk 'NF {print "--ignore-vuln", $$1}')

# requirements.lock again, from pyproject.toml: what pip resolves for .[dev] now.
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet --dry-run --ignore-installed \
		--report .lock-report.json '.[dev]'
	{ sed -n '1,/^$$/p' requirements.lock; $(BIN)/python -c 'import json, sys; \
		meta = [i["metadata"] for i in json.load(open(sys.argv[1]))["install"]]; \
		pins = [m["name"] + "==" + m["version"] for m in meta if m["name"] != "keyhouse"]; \
		print("\n".join(sorted(pins, key=str.lower)))' .lock-report.json; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -f .lock-report.json

# Coverage-guided fuzzing (atheris) of the key parser, the checksum, the
# Bearer header and request guards, and the verifier's checks before the
# database: FUZZ_SECONDS per harness. A crash fails the run and leaves its
# input in fuzz/artifacts/ (replay: python fuzz/<harness>.py <file>).
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES := $(wildcard fuzz/fuzz_*.py)
fuzz: $(VENV)/.installed-dev
	@mkdir -p fuzz/artifacts
	@for harness in $(FUZZ_HARNESSES); do \
		name=$$(basename $$harness .py); \
		log=fuzz/artifacts/$$name.log; \
		if $(BIN)/python $$harness -max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=fuzz/artifacts/$$name- >$$log 2>&1; then \
			echo "$$name: $$(grep -E '^Done' $$log)"; \
		else \
			tail -40 $$log; echo "$$name: FAILED (log: $$log)"; exit 1; \
		fi; \
	done

# Performance figures and goal verdicts, side by side with the framework floors
# and the peer (../shared/bench/peer_drf); ~10 min, not part of test. Writes
# bench/results/latest.json. Knobs: BENCH_RUNS=3 BENCH_DURATION=10.
# BENCH_BASELINE: a git ref whose keyhouse is measured in the same rounds
# (default: main before the one-request-pipeline change; empty for none).
BENCH_BASELINE ?= 6edfb4a
bench: $(VENV)/.installed-dev
	BENCH_BASELINE=$(BENCH_BASELINE) $(BIN)/python bench/run.py

# The vendored assets of /docs and /redoc (src/keyhouse/apidocs/assets), fetched
# again from the npm registry: the versions named in apidocs/endpoints.py.
# Then update the SHA-256 in ASSETS (tests/apidocs checks them). Needs npm.
SWAGGER_UI_VERSION ?= 5.35.0
REDOC_VERSION ?= 2.5.4
docs-assets:
	set -e; tmp=$$(mktemp -d); cd $$tmp; \
	npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) redoc@$(REDOC_VERSION) >/dev/null; \
	mkdir sw rd; tar xzf swagger-ui-dist-*.tgz -C sw; tar xzf redoc-*.tgz -C rd; \
	dest=$(CURDIR)/src/keyhouse/apidocs/assets; \
	cp sw/package/swagger-ui-bundle.js sw/package/swagger-ui-bundle.js.LICENSE.txt \
		sw/package/swagger-ui.css sw/package/favicon-32x32.png $$dest/; \
	cp sw/package/LICENSE $$dest/swagger-ui.LICENSE; cp sw/package/NOTICE $$dest/swagger-ui.NOTICE; \
	cp rd/package/bundles/redoc.standalone.js rd/package/bundles/redoc.standalone.js.LICENSE.txt $$dest/; \
	cp rd/package/LICENSE $$dest/redoc.LICENSE; \
	cd $$dest && sha256sum swagger-ui-bundle.js swagger-ui.css redoc.standalone.js favicon-32x32.png; \
	rm -rf $$tmp

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
