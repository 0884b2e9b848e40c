#!/usr/bin/env bash
# Give Spark ML a native BLAS/LAPACK (used by `make bench`; never fails the benchmark).
#
# Spark's netlib layer (dev.ludovic.netlib) dlopen()s libblas.so.3 and liblapack.so.3 and falls
# back to a much slower pure-Java implementation when they are missing (PCA's covariance pass is
# ~6x slower, see benchmarks/results/README.md). On Debian/Ubuntu, libopenblas0-pthread provides
# both. This script installs it when it is missing and apt-get is usable (root), and says so.
set -u

have_blas() {
    local libs
    libs="$(ldconfig -p 2>/dev/null)"
    grep -q 'libblas\.so\.3 ' <<<"$libs" && grep -q 'liblapack\.so\.3 ' <<<"$libs"
}

if have_blas; then
    echo "native BLAS: libblas.so.3 and liblapack.so.3 are installed (Spark ML uses them)"
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "native BLAS: installing libopenblas0-pthread with apt-get (libblas.so.3 / liblapack.so.3 for Spark ML)"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y --no-install-recommends libopenblas0-pthread >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends libopenblas0-pthread >/dev/null 2>&1; }; then
        have_blas && { echo "native BLAS: installed"; exit 0; }
    fi
    echo "native BLAS: installation failed; Spark ML falls back to its Java BLAS (slower PCA)"
    exit 0
fi
echo "native BLAS: libblas.so.3 missing and apt-get not usable here (needs root);" \
     "Spark ML falls back to its Java BLAS (slower PCA). Install OpenBLAS, e.g. libopenblas0-pthread."
exit 0
