# Developer entry points. CI (.ci/run) runs `make lint test`: the linters, then the suite (`make test` runs the linters first too).

.PHONY: demo test build lint fixtures bench bench-ui bench-kernels clean fuzz soak ui-shots

CARGO ?= cargo
# `make demo` runs the development build, the one `make test` builds too: a fresh clone compiles
# once (about 5 minutes on 2 cores, docs/development.md), not twice. The benchmark alone uses
# the release build.
NIGHTSHIFT = target/debug/nightshift
NIGHTSHIFT_RELEASE = target/release/nightshift
DEMO_DATE ?= 2026-11-03

# Runs the example job on the bundled fixtures: local files only, no server, no network.
# Trains churn@1 into out/registry/ the first time, reuses it after.
demo:
	@test -x $(NIGHTSHIFT) || echo "Building nightshift for the first time: about 5 minutes on 2 cores (measured: docs/development.md); later builds take seconds."
	$(CARGO) build --locked --bin nightshift
	@$(NIGHTSHIFT) model list churn >/dev/null 2>&1 || \
		$(NIGHTSHIFT) model train --data fixtures/churn/train/ --target churned \
			--algorithm logistic --name churn --exclude id
	$(NIGHTSHIFT) run churn_nightly --date $(DEMO_DATE)
	@echo
	$(NIGHTSHIFT) evaluate churn_nightly --date $(DEMO_DATE)
	@echo
	@# A model trained in Python: the committed LightGBM model of the same fixtures, imported once.
	@$(NIGHTSHIFT) model list churn_lgb >/dev/null 2>&1 || \
		$(NIGHTSHIFT) model import fixtures/churn/models/churn_lightgbm.txt --name churn_lgb \
			--reference fixtures/churn/train/ --target churned
	$(NIGHTSHIFT) run churn_lightgbm --date $(DEMO_DATE)
	@echo
	@echo "scores:     out/scores/churn/dt=$(DEMO_DATE)/"
	@echo "run record: out/state/runs/churn_nightly/$(DEMO_DATE)/"
	@echo "drift:      out/reports/job=churn_nightly/dt=$(DEMO_DATE)/drift.parquet"
	@echo "            $(NIGHTSHIFT) drift show churn_nightly [--html drift.html]"
	@echo "lightgbm:   out/scores/churn_lightgbm/dt=$(DEMO_DATE)/ (proba_0, proba_1)"
	@echo "performance: out/reports/job=churn_nightly/dt=$(DEMO_DATE)/performance.parquet"
	@echo "            $(NIGHTSHIFT) performance show churn_nightly [--html performance.html]"

$(NIGHTSHIFT_RELEASE): Cargo.toml Cargo.lock $(shell find src -name '*.rs')
	$(CARGO) build --release --locked --bin nightshift

build:
	$(CARGO) build --locked --all-targets

# The linters (rustfmt, clippy), then the whole suite, S3 and MLflow tests included, against
# a real S3-compatible server (s3s-fs) and two real MLflow servers on 127.0.0.1 that this
# target installs (if missing), starts and stops (Makefile.s3, Makefile.mlflow). Set
# NIGHTSHIFT_TEST_S3_ENDPOINT (and AWS_* credentials) to run against another S3 server, such
# as MinIO, and NIGHTSHIFT_TEST_MLFLOW (and the others Makefile.mlflow prints) for MLflow.
test: lint
	@if [ -n "$$NIGHTSHIFT_TEST_S3_ENDPOINT" ]; then s3=; else \
		$(MAKE) --no-print-directory s3-server || exit 1; s3="$(S3_ENV)"; fi; \
	if [ -n "$$NIGHTSHIFT_TEST_MLFLOW" ]; then mlflow=; else \
		$(MAKE) --no-print-directory mlflow-server || { $(MAKE) --no-print-directory s3-server-stop; exit 1; }; \
		mlflow="$(MLFLOW_ENV)"; fi; \
	status=0; env $$s3 $$mlflow $(CARGO) test --locked --all-targets || status=$$?; \
	[ -z "$$s3" ] || $(MAKE) --no-print-directory s3-server-stop; \
	[ -z "$$mlflow" ] || $(MAKE) --no-print-directory mlflow-server-stop; \
	exit $$status

# Performance: nightshift and the peer pipelines of ../shared/bench side by side, one run,
# medians and ratios, and every target of issue 11 checked (docs/benchmarks.md). Installs the
# peers' Python packages and s3s-fs (for the S3 rows; the bench starts its own on port 8015,
# never the tests' 8014) if missing. Ten minutes or more; BENCH_ARGS="--skip-rf --big ..." to choose.
bench: $(NIGHTSHIFT_RELEASE)
	@python3 -c 'import numpy, pyarrow, sklearn, joblib, duckdb, polars, pandas, boto3, lightgbm, xgboost, onnxruntime, onnxmltools, onnx, skl2onnx' 2>/dev/null || \
		python3 -m pip install -q numpy pyarrow scikit-learn joblib duckdb polars pandas boto3 lightgbm==4.7.0 xgboost==3.2.0 onnxruntime==1.32.0 onnxmltools==1.16.0 onnx==1.23.2 skl2onnx==1.20.0
	@command -v s3s-fs >/dev/null || cargo install s3s-fs@$(S3S_FS_VERSION) --features binary --locked
	python3 benches/bench.py $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-ui

# The web pages on a year of history: a job page of 365 dates and 50 features against its
# 300 ms target (benches/ui.py, docs/benchmarks.md). Also run by `make bench`.
# The state is written by the development build of fixtures/ui-state.rs (the one the tests
# build: a release build of an example would compile the dependencies again with the test
# features); the pages are served by the release build.
bench-ui: $(NIGHTSHIFT_RELEASE)
	$(CARGO) build --locked --example ui-state
	python3 benches/ui.py --binary $(NIGHTSHIFT_RELEASE) --state-tool target/debug/examples/ui-state

# Criterion micro-benchmarks of the hot kernels (feature matrix, linear scoring, forest,
# profile update, KS, Wasserstein): benches/kernels. Builds criterion the first time.
bench-kernels:
	$(CARGO) bench --locked -p nightshift-kernels $(if $(FILTER),-- $(FILTER))

# Fuzzes job files, Parquet inputs and model files (tests/it/fuzz.rs) for FUZZ_SECONDS per target from a
# fresh seed (FUZZ_SEED=0x... repeats a run); `make test` runs a short fixed pass of the same.
# A failure prints the seed that replays it and saves the input under target/tmp/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_SEED ?=
fuzz:
	@status=0; for target in job_files parquet_inputs parquet_runs lightgbm_files xgboost_files onnx_files; do \
		NIGHTSHIFT_FUZZ_SECONDS=$(FUZZ_SECONDS) NIGHTSHIFT_FUZZ_SEED=$(FUZZ_SEED) \
			$(CARGO) test --locked --test it -- --exact fuzz::$$target --nocapture \
			|| status=1; \
	done; exit $$status

# The daemon (the release build, as production runs it; SOAK_BINARY=... for another) for
# SOAK_MINUTES (default 30) at real speed with 100 every-minute jobs, while a
# script edits job files, triggers runs over HTTP and scrapes /metrics; checks RSS, fds and
# threads growth, fire delay, committed runs, leftovers and /jobs latency (tests/soak.py,
# docs/reliability.md). Its figures land in target/soak/figures.json.
SOAK_MINUTES ?= 30
SOAK_BINARY ?= $(NIGHTSHIFT_RELEASE)
soak: $(NIGHTSHIFT_RELEASE)
	python3 tests/soak.py --binary $(SOAK_BINARY) --minutes $(SOAK_MINUTES)

# Screenshots of the web pages (docs/ui.md) over the fixture state of fixtures/ui-state.rs,
# taken by headless Chromium: Debian's package, installed here the first time (measured with
# chromium 148.0.7778.167-1~deb12u1). Writes docs/ui/*.png.
CHROMIUM ?= chromium
ui-shots:
	$(CARGO) build --locked --bin nightshift --example ui-state
	@command -v $(CHROMIUM) >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	python3 tests/ui_shots.py --binary $(NIGHTSHIFT) --state-tool target/debug/examples/ui-state --chromium $(CHROMIUM)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Regenerates the bundled fixtures (deterministic: the same bytes every time).
fixtures:
	$(CARGO) run --locked --example make-fixtures -- fixtures/churn

clean:
	rm -rf out

include Makefile.s3
include Makefile.mlflow
