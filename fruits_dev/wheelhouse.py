"""Builds the EMR wheelhouse: every wheel requirements-emr.txt pins, for each node architecture,
downloaded once into a cache outside the checkout (fruits/backends/emr/wheelhouse.py says why
and what a complete folder is).

    python -m fruits_dev.wheelhouse build [--arch x86_64 --arch aarch64] [--dest DIR]   (make emr-wheelhouse)
    python -m fruits_dev.wheelhouse status [--dest DIR]

`pip download --require-hashes` fetches the wheels for the nodes' platform (cp311, manylinux up to
2_28), whatever machine runs it. pip evaluates environment markers for the machine it runs on,
so it reads a per-architecture copy of the requirements with the markers already evaluated for
the target. A folder marked COMPLETE is kept if it still verifies (downloaded again otherwise); an
unfinished one is resumed (pip skips the files it already holds once their hash checks) and marked
only after every file was verified.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fruits.backends.emr import wheelhouse
from fruits.settings import PROJECT_ROOT, emr_wheelhouse_dir

REQUIREMENTS = PROJECT_ROOT / "spark_jobs" / "emr" / "requirements-emr.txt"


def pip_download_command(requirements_file: Path, directory: Path, arch: str, pip_args=()) -> list[str]:
    python = ".".join(map(str, wheelhouse.PYTHON_VERSION))
    interpreter = "cp" + python.replace(".", "")
    platforms = [arg for name in wheelhouse.platforms(arch) for arg in ("--platform", name)]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--dest",
        str(directory),
        "--require-hashes",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        interpreter,
        *platforms,
        *pip_args,
        "-r",
        str(requirements_file),
    ]


def build(
    requirements: Path = REQUIREMENTS, dest: Path | None = None, architectures=wheelhouse.ARCHITECTURES, pip_args=()
) -> dict[str, Path]:
    """The wheelhouse folder of each architecture, downloaded unless already complete.

    `pip_args`: extra pip options (a mirror: --index-url; offline: --no-index --find-links DIR).
    """
    root = Path(dest or emr_wheelhouse_dir()).expanduser()
    content = requirements.read_bytes()
    text = content.decode("utf-8")
    built = {}
    for arch in architectures:
        directory = wheelhouse.folder(root, content, arch)
        if (directory / wheelhouse.COMPLETE).is_file():
            try:
                wheelhouse.verify(directory, text, arch)
                print(f"wheelhouse: {directory} is complete", file=sys.stderr)
                built[arch] = directory
                continue
            except wheelhouse.WheelhouseNotReady as exc:  # changed since it was built: start again
                print(f"wheelhouse: {exc}; downloading it again", file=sys.stderr)
                shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fruits-wheelhouse-") as work:
            arch_requirements = Path(work) / f"requirements-{arch}.txt"
            arch_requirements.write_text(wheelhouse.requirements_for(text, arch))
            subprocess.run(pip_download_command(arch_requirements, directory, arch, pip_args), check=True)
        digests = wheelhouse.mark_complete(directory, text, arch)
        size = sum((directory / name).stat().st_size for name in digests)
        print(
            f"wheelhouse: {directory}: {len(digests)} wheels, {size / 1e6:.0f} MB in "
            f"{time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        built[arch] = directory
    return built


def status(requirements: Path = REQUIREMENTS, dest: Path | None = None) -> int:
    root = Path(dest or emr_wheelhouse_dir()).expanduser()
    content, failed = requirements.read_bytes(), 0
    for arch in wheelhouse.ARCHITECTURES:
        try:
            directory, digests = wheelhouse.ready(root, content, arch)
        except wheelhouse.WheelhouseNotReady as exc:
            print(f"{arch}: {exc}")
            failed += 1
            continue
        size = sum((directory / name).stat().st_size for name in digests)
        print(f"{arch}: {directory} complete, {len(digests)} wheels, {size / 1e6:.0f} MB")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fruits_dev.wheelhouse", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "status"])
    parser.add_argument(
        "--arch",
        action="append",
        choices=wheelhouse.ARCHITECTURES,
        help="node architecture (repeatable; default: all of them)",
    )
    parser.add_argument("--dest", type=Path, help=f"wheelhouse root (default {emr_wheelhouse_dir()})")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--find-links", type=Path, help="take the wheels from this folder, not from an index")
    args = parser.parse_args(argv)
    if args.command == "status":
        return status(args.requirements, args.dest)
    pip_args = ["--no-index", "--find-links", str(args.find_links)] if args.find_links else []
    try:
        build(args.requirements, args.dest, tuple(dict.fromkeys(args.arch or wheelhouse.ARCHITECTURES)), pip_args)
    except subprocess.CalledProcessError as exc:
        print(f"wheelhouse: pip download failed (exit {exc.returncode}); the folder stays unmarked", file=sys.stderr)
        return 1
    except wheelhouse.WheelhouseNotReady as exc:
        print(f"wheelhouse: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
