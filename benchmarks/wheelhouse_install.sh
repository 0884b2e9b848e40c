#!/usr/bin/env bash
# The EMR bootstrap's install step from the wheelhouse against the install from the index it
# replaced (README, "Cluster boot without PyPI"): each into a fresh `python3.11 -m venv`, the two
# alternated RUNS times (default 3) on this machine's architecture. Needs `make emr-wheelhouse`.
#
#   benchmarks/wheelhouse_install.sh            (RUNS=2, PYTHON=/path/to/python3.11 to change)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
requirements=${here}/spark_jobs/emr/requirements-emr.txt
key=$(sha256sum "${requirements}" | cut -c1-16)
machine=$(uname -m)
wheels=${FRUITS_EMR_WHEELHOUSE:-${HOME}/.cache/fruits-pipeline/wheelhouse}/${key}/${machine}
python=${PYTHON:-python3.11}
work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT

if [[ ! -f ${wheels}/COMPLETE ]]; then
    echo "no complete wheelhouse at ${wheels}: run make emr-wheelhouse" >&2
    exit 1
fi
size=$(du -sh "${wheels}")
echo "wheelhouse ${size}"
for run in $(seq "${RUNS:-3}"); do
    for source in wheelhouse index; do
        rm -rf "${work}/venv"
        "${python}" -m venv "${work}/venv"
        if [[ ${source} == wheelhouse ]]; then  # the install line of spark_jobs/emr/bootstrap.sh
            install=(--quiet --no-cache-dir --disable-pip-version-check --no-index --find-links "${wheels}"
                     --require-hashes --no-deps --only-binary :all: -r "${requirements}")
        else  # what bootstrap.sh ran before the wheelhouse
            install=(--quiet --require-hashes --no-deps --only-binary :all: --no-cache-dir -r "${requirements}")
        fi
        started=$(date +%s.%N)
        env -u PIP_FIND_LINKS "${work}/venv/bin/python3" -m pip install "${install[@]}"
        ended=$(date +%s.%N)
        seconds=$(echo "${ended} - ${started}" | bc)
        now=$(date -u +%FT%TZ)
        echo "${now} run ${run} ${source}: ${seconds} s"
    done
done
