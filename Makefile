# fruits-pipeline: the two commands users need are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BASE_PYTHON ?= $(shell command -v python3.11 || command -v python3)

# Spark's Python workers must run the project's interpreter, not the first python3 on PATH.
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export TF_CPP_MIN_LOG_LEVEL := 2

DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: help lint airflow venv emr-stack demo-emr test test-unit test-dags test-integration demo demo-more bench bench-scale clean check-java native-blas spark-cds

help:
	@echo "make demo    - run fruits_pipeline end to end on an embedded S3 server (see README)"
	@echo "make test    - install everything into $(VENV), lint, and run the whole test suite"
	@echo "make lint    - ruff check and ruff format --check (configured in pyproject.toml)"
	@echo "make test-unit / test-dags / test-integration - one tier of it (see README)"
	@echo "make demo-emr - the demo on the EMR backend: a local EMR runs the steps on EMR's Spark 3.5 stack"
	@echo "make emr-stack / emr-wheelhouse - EMR's Python + Spark 3.5 here (.venv-emr) / the nodes' wheels (both archs)"
	@echo "make airflow - a real Airflow (UI on 127.0.0.1:8080, admin/admin) running the pipeline, until Ctrl-C"
	@echo "make bench   - featurization and PCA benchmarks (results in benchmarks/results/)"
	@echo "make bench-scale - a 1,000-image run's orchestration on 10k/100k/1M committed images (scale-*.json)"

# --compile-bytecode (pip's default, not uv's): where Python cannot write its bytecode cache
# (PYTHONDONTWRITEBYTECODE, read-only images), every process would otherwise compile the modules
# it imports, TensorFlow alone ~5 s, in each Spark Python worker too. ~40 s once at install.
# The project installs itself (editable): DAGs, tests, benchmarks and the demo import fruits,
# fruits_spark and fruits_dev with no PYTHONPATH.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

# Hadoop's S3A connector for the venv's Spark (fruits/spark_s3a.py pins it): resolved once by
# Spark's Ivy from Maven Central into ~/.cache/fruits-pipeline/ivy; runs read it from there.
# (check-java is order-only: it runs first, without making the stamp out of date.)
$(VENV)/.s3a-jars: $(VENV)/.installed fruits/spark_s3a.py | check-java
	$(PY) -m fruits_dev.spark_jars install
	@touch $@

venv: $(VENV)/.installed $(VENV)/.s3a-jars

# EMR's stack (fruits_dev/emr_stack.py): a second virtualenv as a cluster node gets it (Python
# 3.11, spark_jobs/emr/requirements-emr.txt hash-checked, EMR's Spark 3.5 and its S3A jars), on
# which the local EMR of the tests and `make demo-emr` runs the steps.
emr-stack: venv check-java
	$(PY) -m fruits_dev.emr_stack build

check-java:
	@command -v java >/dev/null || { echo "Java 17 is required by Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }

# Spark's JVM starts ~3 s faster with a class-data-sharing archive (fruits_dev/spark_cds.py);
# built once per Spark and Java version, ignored by the JVM if it does not match.
spark-cds: venv check-java
	$(PY) -m fruits_dev.spark_cds build

# Lint first: a style or pyflakes error fails in seconds, before an hour of tests.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: venv lint check-java spark-cds emr-stack
	$(PY) -m pytest

# The three tiers alone (README, "Tests"): the unit tests need neither Java nor Spark (`make venv`
# needs Java once, to resolve the S3A jars).
test-unit: venv
	$(PY) -m pytest tests/unit

test-dags: venv
	$(PY) -m pytest tests/dags

test-integration: venv check-java spark-cds emr-stack
	$(PY) -m pytest tests/integration

demo: venv check-java spark-cds
	$(PY) -m fruits_dev.demo $(DEMO_ARGS)

# The same demo on the EMR backend: RunJobFlow, steps run by the local EMR on EMR's stack.
demo-emr: venv check-java spark-cds emr-stack
	$(PY) -m fruits_dev.demo --compute emr $(DEMO_ARGS)

demo-more: venv check-java spark-cds
	$(PY) -m fruits_dev.demo --add-images 8 $(DEMO_ARGS)

# A real Airflow on this machine, in the foreground until Ctrl-C (README, "Run Airflow locally"):
# API server + UI, scheduler (LocalExecutor), dag-processor, triggerer, embedded S3, local Spark.
# FRUITS_AIRFLOW_PORT, FRUITS_S3_PORT, FRUITS_AIRFLOW_PASSWORD, FRUITS_AIRFLOW_DB_URL change its defaults.
airflow: venv check-java spark-cds
	$(PY) -m fruits_dev.airflow_stack

# Spark ML's PCA uses a native BLAS when libblas.so.3 is present (Debian: libopenblas0-pthread).
native-blas:
	@ldconfig -p | grep -q 'libblas.so.3 ' || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing OpenBLAS for Spark ML (libopenblas0-pthread)"; \
	    apt-get update -qq && apt-get install -y -qq libopenblas0-pthread >/dev/null; \
	  else echo "no native BLAS (libblas.so.3): Spark ML PCA runs on its slower JVM fallback"; fi; }

# The wheels EMR nodes install at boot instead of reaching PyPI, for both node architectures, in a
# cache outside the checkout (~/.cache/fruits-pipeline/wheelhouse, or FRUITS_EMR_WHEELHOUSE):
# the EMR backend's upload_code needs it (docs/emr.md, "Cluster boot without PyPI").
.PHONY: emr-wheelhouse
emr-wheelhouse: venv
	$(PY) -m fruits_dev.wheelhouse build --arch x86_64 --arch aarch64

bench: venv check-java native-blas spark-cds
	$(PY) benchmarks/run.py $(BENCH_ARGS)

bench-scale: venv check-java spark-cds
	$(PY) benchmarks/scale.py $(BENCH_SCALE_ARGS)

clean:
	rm -rf demo-output spark-warehouse .pytest_cache .cache/spark-cds
