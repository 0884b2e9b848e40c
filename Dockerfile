# syntax=docker/dockerfile:1
#
# Airflow image for the local fruits-pipeline stack (see docker-compose.yaml).
#
# Extends the official image the way the docker-stack docs recommend
# (https://airflow.apache.org/docs/docker-stack/build.html): system packages as root,
# Python packages as the `airflow` user, with apache-airflow pinned to the base image's
# version so pip cannot silently upgrade or downgrade Airflow while resolving requirements.
#
# Build: docker compose build   (or: docker build -t fruits-pipeline-airflow:local .)

# Keep in sync with `apache-airflow==` in requirements.txt (tests/unit/test_docker_compose.py checks it).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
# ARGs declared before FROM are not visible after it unless declared again.
ARG AIRFLOW_VERSION

USER root

# - openjdk-17-jre-headless: the JVM behind PySpark 4.x (Spark 4 requires Java 17+).
# - libopenblas0-pthread: native BLAS picked up by Spark ML (PCA) instead of the pure-JVM fallback.
# The JDK directory is named after the Debian architecture (java-17-openjdk-amd64 / -arm64),
# so a stable symlink lets JAVA_HOME work on both x86_64 and Apple-silicon/arm64 hosts.
# /usr/share/man/man1 may be missing in slim images and breaks the JRE's postinst.
RUN apt-get update \
    && mkdir -p /usr/share/man/man1 \
    && apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless \
        libopenblas0-pthread \
    && ln -sfn "/usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)" /usr/lib/jvm/java-17 \
    && /usr/lib/jvm/java-17/bin/java -version \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

ENV JAVA_HOME=/usr/lib/jvm/java-17
# The official image installs Airflow in a virtualenv at /home/airflow/.local whose bin/
# directory is first on PATH; the interpreter behind /usr/local/bin/python does NOT see those
# packages. Resolving `python` through PATH makes Spark's Python workers use the same
# interpreter (and pyspark/tensorflow/pillow) as the Airflow task that launched the job.
ENV PYSPARK_PYTHON=python \
    PYSPARK_DRIVER_PYTHON=python

# pip must run as `airflow`: the official image refuses `pip install` as root.
USER airflow
# Runtime requirements only: test tools (moto, pytest, playwright, shellcheck) are in requirements-dev.txt.
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt
# The project itself, installed editable (the DAG imports the `fruits` package): docker-compose.yaml
# bind-mounts fruits/ and spark_jobs/ over these copies, so code edits apply without a rebuild.
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/project/
COPY --chown=airflow:0 fruits /opt/airflow/project/fruits
COPY --chown=airflow:0 fruits_dev /opt/airflow/project/fruits_dev
COPY --chown=airflow:0 spark_jobs /opt/airflow/project/spark_jobs
RUN pip install --no-cache-dir --no-deps -e /opt/airflow/project
# Hadoop's S3A connector for the image's Spark (fruits/spark_s3a.py pins it), resolved from Maven
# Central at build time into the image: the local backend's Spark reads and writes MinIO through it
# (`s3://` mapped to S3A, credentials from the AWS connection), with no download at run time.
ENV FRUITS_SPARK_JARS_CACHE=/opt/airflow/spark-jars
RUN python -m fruits_dev.spark_jars install
# The wheels EMR nodes install at boot (`make emr-wheelhouse`, docs/emr.md), at the default
# FRUITS_EMR_WHEELHOUSE (~/.cache/fruits-pipeline/wheelhouse): about 0.9 GB for both node
# architectures. `--build-arg EMR_WHEELHOUSE=false` leaves them out (local backend only).
ARG EMR_WHEELHOUSE=true
RUN if [ "${EMR_WHEELHOUSE}" = "true" ]; then python -m fruits_dev.wheelhouse build; fi
