#!/usr/bin/env bash
# EMR bootstrap action of fruits-pipeline: runs on every node (primary and core) before Spark starts.
#
#   bootstrap.sh s3://<bucket>/code/<version>/requirements-emr.txt s3://<bucket>/wheelhouse/<key>/ [venv-dir]
#
# 1. Python 3.11 (TensorFlow 2.21 needs >= 3.10; EMR 7's default python3 is 3.9) in a virtualenv
#    with the jobs' requirements, every one pinned and hash-checked (requirements-emr.txt, made by
#    compile-requirements.sh), featurize.py's inference runtime (ONNX Runtime) and the
#    converter its driver uses (tf2onnx) included. The wheels come from the wheelhouse the DAG
#    uploaded (<wheelhouse-uri>/<uname -m>/, fruits/backends/emr/wheelhouse.py), not from PyPI:
#    no package index is reached, so a node boots faster and in a subnet without internet.
#    The cluster configurations (fruits/backends/emr/cluster.py) point Spark's driver and Python
#    workers at <venv-dir>/bin/python3; PySpark itself is EMR's.
# 2. OpenBLAS as the native BLAS/LAPACK of Spark ML (pca.py --solver spark-ml, and users applying
#    the saved model in Spark): dev.ludovic.netlib loads libblas.so.3 / liblapack.so.3, which are
#    made to resolve to OpenBLAS (Spark's "MLlib Linear Algebra Acceleration Guide"). Without it
#    Spark falls back to Java BLAS. (pca.py's default solver uses numpy's own BLAS.)
#
# Amazon Linux 2023 (EMR 7.x). Safe to run twice. A failure of step 1 fails the bootstrap action,
# and EMR then ends the cluster (TERMINATED_WITH_ERRORS) instead of running steps on a broken
# node; step 2 is best effort (without it Spark ML uses Java BLAS).
set -euo pipefail

readonly PYTHON_VERSION=3.11
readonly BLAS_DIR=/usr/local/lib64/fruits-blas

log() { echo "fruits-bootstrap: $*" >&2; }

if [[ $# -lt 2 || $# -gt 3 ]]; then
    log "usage: $0 s3://bucket/code/<version>/requirements-emr.txt s3://bucket/wheelhouse/<key>/ [venv-dir]"
    exit 2
fi
requirements_uri=$1
wheelhouse_uri=${2%/}
venv_dir=${3:-/opt/fruits/venv}
python_bin=python${PYTHON_VERSION}
machine=$(uname -m)

log "installing ${python_bin}"
sudo dnf install -y -q "${python_bin}" "${python_bin}-pip"

log "creating ${venv_dir}"
sudo mkdir -p "$(dirname "${venv_dir}")"
sudo "${python_bin}" -m venv "${venv_dir}"

workdir=$(mktemp -d)
trap 'rm -rf "${workdir}"' EXIT
aws s3 cp --only-show-errors "${requirements_uri}" "${workdir}/requirements.txt"
log "copying the ${machine} wheels from ${wheelhouse_uri}/${machine}/"
aws s3 cp --only-show-errors --recursive "${wheelhouse_uri}/${machine}/" "${workdir}/wheels/"
if ! compgen -G "${workdir}/wheels/*.whl" >/dev/null; then
    log "no wheels under ${wheelhouse_uri}/${machine}/: the DAG uploads them for the run's instance types"
    exit 1
fi
log "installing the jobs' requirements from ${requirements_uri}"
# Every package is pinned with its hashes (compile-requirements.sh): pip installs exactly those
# wheels, from the wheelhouse only (--no-index), resolves nothing (--no-deps) and fails on any
# file whose sha256 is not listed. The venv's own pip (python3.11-pip) is used as it is: no
# unpinned upgrade at boot.
sudo "${venv_dir}/bin/python3" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    --no-index --find-links "${workdir}/wheels" \
    --require-hashes --no-deps --only-binary :all: -r "${workdir}/requirements.txt"
# Every node must be able to run the jobs: fail the bootstrap here rather than a step later.
"${venv_dir}/bin/python3" -c 'import numpy, pandas, pyarrow, PIL, pillow_heif, tensorflow, keras, matplotlib, onnxruntime, tf2onnx, onnx'
python_version=$("${venv_dir}/bin/python3" --version)
log "${python_version} ready in ${venv_dir}"

# Native BLAS is a speed-up, not a requirement: without it Spark ML falls back to Java BLAS,
# so a problem here is reported but does not fail the node.
install_openblas() {
    local package candidate
    for package in openblas-serial openblas; do
        if sudo dnf install -y -q "${package}" >&2; then
            break
        fi
    done
    # Serial OpenBLAS first: Spark runs one task per core, so BLAS threads would only compete
    # (OPENBLAS_NUM_THREADS=1 is also set in the Spark configuration).
    for candidate in /usr/lib64/libopenblas.so.0 /usr/lib64/libopenblasp.so.0 /usr/lib64/libopenblaso.so.0; do
        if [[ -e ${candidate} ]]; then
            sudo mkdir -p "${BLAS_DIR}"
            sudo ln -sf "${candidate}" "${BLAS_DIR}/libblas.so.3"
            sudo ln -sf "${candidate}" "${BLAS_DIR}/liblapack.so.3"
            echo "${BLAS_DIR}" | sudo tee /etc/ld.so.conf.d/fruits-blas.conf >/dev/null
            sudo ldconfig
            echo "${candidate}"
            return 0
        fi
    done
    return 1
}

# shellcheck disable=SC2310  # best effort on purpose: no `set -e` inside
if openblas=$(install_openblas); then
    # Directories of /etc/ld.so.conf.d come before /usr/lib64 in the loader cache: check anyway.
    resolved=$(/sbin/ldconfig -p | awk '$1 == "libblas.so.3" && !found { print $NF; found = 1 }')
    resolved_target=$(readlink -f "${resolved:-/nonexistent}" || true)
    openblas_target=$(readlink -f "${openblas}")
    if [[ ${resolved_target} == "${openblas_target}" ]]; then
        log "native BLAS: libblas.so.3 and liblapack.so.3 -> ${openblas}"
    else
        log "warning: libblas.so.3 resolves to '${resolved}', not ${openblas}: Spark ML may use Java BLAS"
    fi
else
    log "warning: OpenBLAS could not be installed: Spark ML will use Java BLAS (slower PCA)"
fi
log "done"
