"""The code a cluster runs: spark_jobs/ -> s3://<bucket>/code/<version>/, and the wheels its nodes
install at boot -> s3://<bucket>/wheelhouse/<key>/<arch>/, both content-addressed.

The version is a hash of every source, so an edit gives a new folder and a re-run reuses the
one already uploaded (no overwrite), but only after checking that every object there has the
sha256 of this checkout's file: code the nodes run as root is never reused unverified. The
wheelhouse's key is a hash of requirements-emr.txt: uploaded once per requirements version, for
the architectures a run's instance types need, each wheel already there checked the same way.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fruits import contract, layout
from fruits.backends.emr import wheelhouse
from fruits.errors import PermanentError
from fruits.storage import Bucket

# Files of a code version (names under code/<version>/).
PACKAGE = "fruits_spark"
PACKAGE_ZIP = f"{PACKAGE}.zip"
FEATURIZE = contract.FEATURIZE_SCRIPT
PCA = contract.PCA_SCRIPT
CLASSIFY = contract.CLASSIFY_SCRIPT
JOBS = (FEATURIZE, PCA, CLASSIFY)
BOOTSTRAP = "bootstrap.sh"
REQUIREMENTS = "requirements-emr.txt"
EMR_DIR = "emr"  # spark_jobs/emr/ holds the bootstrap script and the requirements
WHEELHOUSE = "wheelhouse/"  # wheelhouse/<key>/<arch>/<wheel>: what bootstrap.sh installs, with no index
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip bytes


@dataclass(frozen=True)
class CodeBundle:
    version: str
    files: dict[str, bytes]  # name under code/<version>/ -> content

    @property
    def wheelhouse_key(self) -> str:
        return wheelhouse.key(self.files[REQUIREMENTS])


def source_files(spark_jobs_dir: Path) -> dict[str, Path]:
    """The files whose content defines a code version (relative POSIX name -> path)."""
    spark_jobs_dir = Path(spark_jobs_dir)
    files = {name: spark_jobs_dir / name for name in JOBS}
    for path in sorted((spark_jobs_dir / PACKAGE).glob("*.py")):
        files[f"{PACKAGE}/{path.name}"] = path
    for name in (BOOTSTRAP, REQUIREMENTS):
        files[f"{EMR_DIR}/{name}"] = spark_jobs_dir / EMR_DIR / name
    missing = sorted(str(path) for path in files.values() if not path.is_file())
    if missing or f"{PACKAGE}/__init__.py" not in files:
        raise FileNotFoundError(f"Spark job sources missing under {spark_jobs_dir}: {missing or PACKAGE}")
    return files


def code_version(sources: dict[str, bytes]) -> str:
    """Content hash of the sources (names included): any edit gives a new version."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        data = sources[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def package_zip(modules: dict[str, bytes]) -> bytes:
    """A zip of the package for `--py-files`, byte-identical for identical sources."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(modules):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, modules[name])
    return buffer.getvalue()


def code_bundle(spark_jobs_dir: Path) -> CodeBundle:
    sources = {name: path.read_bytes() for name, path in source_files(spark_jobs_dir).items()}
    files = {
        **{job: sources[job] for job in JOBS},
        PACKAGE_ZIP: package_zip({n: data for n, data in sources.items() if n.startswith(PACKAGE + "/")}),
        BOOTSTRAP: sources[f"{EMR_DIR}/{BOOTSTRAP}"],
        REQUIREMENTS: sources[f"{EMR_DIR}/{REQUIREMENTS}"],
    }
    return CodeBundle(version=code_version(sources), files=files)


def code_prefix(version: str) -> str:
    return f"code/{version}/"


def wheelhouse_prefix(key: str) -> str:
    """The bootstrap's wheelhouse URI: it adds `<arch>/` (its node's `uname -m`)."""
    return f"{WHEELHOUSE}{key}/"


def code_uris(bucket: str, version: str, wheelhouse_key: str) -> dict[str, str]:
    prefix = code_prefix(version)
    return {
        "prefix": layout.s3_uri(bucket, prefix),
        "featurize": layout.s3_uri(bucket, prefix + FEATURIZE),
        "pca": layout.s3_uri(bucket, prefix + PCA),
        "classify": layout.s3_uri(bucket, prefix + CLASSIFY),
        "py_files": layout.s3_uri(bucket, prefix + PACKAGE_ZIP),
        "bootstrap": layout.s3_uri(bucket, prefix + BOOTSTRAP),
        "requirements": layout.s3_uri(bucket, prefix + REQUIREMENTS),
        "wheelhouse": layout.s3_uri(bucket, wheelhouse_prefix(wheelhouse_key)),
    }


class CodeMismatch(PermanentError, RuntimeError):
    """An object of code/<version>/ or wheelhouse/<key>/<arch>/ is not the file this machine would upload."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_existing(bucket: Bucket, prefix: str, expected: dict[str, bytes]) -> None:
    """Read back every object about to be reused and compare its sha256 with the local file's."""
    changed = []
    for name, data in expected.items():
        found = sha256(bucket.read_bytes(prefix + name))
        if found != sha256(data):
            changed.append(f"{name} (sha256 {found[:12]}..., this checkout {sha256(data)[:12]}...)")
    if changed:
        raise CodeMismatch(
            f"s3://{bucket.name}/{prefix} holds files that differ from this checkout's code version: "
            f"{', '.join(changed)}. Someone or something changed them after upload; nothing was run. "
            f"Inspect them, then delete s3://{bucket.name}/{prefix} so that the next run uploads the code again."
        )


def plan_wheelhouse(bucket: Bucket, root: Path, requirements: bytes, architectures) -> tuple[list, list[str]]:
    """(wheels to upload as (key, path, sha256), names already there) for the `architectures`' local
    wheelhouses: WheelhouseNotReady when one is missing or incomplete, CodeMismatch when the bucket
    holds a wheel with other bytes, or a file the wheelhouse does not have (every node would copy it).
    Reads only: nothing is uploaded before every check passed."""
    local = {arch: wheelhouse.ready(root, requirements, arch) for arch in architectures}
    to_upload, skipped = [], []
    for arch, (directory, digests) in local.items():
        prefix = f"{wheelhouse_prefix(wheelhouse.key(requirements))}{arch}/"
        existing = {info.key[len(prefix) :]: info for info in bucket.list_objects(prefix)}
        changed = [f"{name} (not in this wheelhouse)" for name in sorted(existing.keys() - digests.keys())]
        for name, digest in digests.items():
            path, found = directory / name, existing.get(name)
            if found is None:
                to_upload.append((prefix + name, path, digest))
                continue
            size = path.stat().st_size
            if found.size != size:
                changed.append(f"{name} ({found.size} bytes, local {size})")
            elif (remote := bucket.sha256_of(found.key)) != digest:
                changed.append(f"{name} (sha256 {remote[:12]}..., local {digest[:12]}...)")
            else:
                skipped.append(f"{arch}/{name}")
        if changed:
            raise CodeMismatch(
                f"s3://{bucket.name}/{prefix} holds files that differ from the local wheelhouse "
                f"{directory}: {', '.join(changed)}. Someone or something changed them after upload; nothing was "
                f"run. Inspect them, then delete s3://{bucket.name}/{prefix} so that the next run uploads it again."
            )
    return to_upload, skipped


def upload_code(bucket: Bucket, spark_jobs_dir: Path, *, wheelhouse_root: Path, architectures) -> dict:
    """Upload this checkout's code version and the `architectures`' wheelhouses, reusing what is
    already there once verified. Raises before anything is uploaded: WheelhouseNotReady when a local
    wheelhouse is missing or incomplete, CodeMismatch when an existing object differs from the
    local file."""
    started = time.perf_counter()
    bundle = code_bundle(spark_jobs_dir)
    architectures = sorted(set(architectures))
    wheels, wheels_skipped = plan_wheelhouse(bucket, wheelhouse_root, bundle.files[REQUIREMENTS], architectures)
    prefix = code_prefix(bundle.version)
    existing = set(bucket.list_keys(prefix))
    skipped = [name for name in bundle.files if prefix + name in existing]
    verify_existing(bucket, prefix, {name: bundle.files[name] for name in skipped})
    uploaded = []
    for name, data in bundle.files.items():
        if name not in skipped:
            bucket.write_bytes(prefix + name, data)
            uploaded.append(name)
    for key, path, digest in wheels:
        bucket.upload_file_checked(key, path, digest)
    return {
        "version": bundle.version,
        "uris": code_uris(bucket.name, bundle.version, bundle.wheelhouse_key),
        "uploaded": uploaded,
        "skipped": skipped,
        "architectures": architectures,
        "wheelhouse": {
            "key": bundle.wheelhouse_key,
            "uploaded": [key.split("/", 2)[2] for key, _, _ in wheels],
            "skipped": wheels_skipped,
        },
        "seconds": round(time.perf_counter() - started, 2),
    }
