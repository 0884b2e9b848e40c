"""The wheels EMR nodes install at boot, kept on this machine: one folder per node architecture
holding exactly the files requirements-emr.txt pins for it.

bootstrap.sh installs from them with `pip install --no-index` instead of downloading every package
from PyPI on every node of every run: minutes less of billed boot, and clusters in a subnet
without internet. `fruits_dev.wheelhouse` builds them (`make emr-wheelhouse`); code.upload_code
copies those a run's instance types need to s3://<bucket>/wheelhouse/<key>/<arch>/.

    <root>/<key>/<arch>/*.whl, COMPLETE     <key>: a hash of requirements-emr.txt's content

A folder counts only once its builder wrote the COMPLETE marker (a half-download is never taken
for a wheelhouse), and it is checked again before each upload: every package pinned for that
architecture present, every file's sha256 one the requirements list, every wheel installable on
the nodes' Python 3.11 (manylinux up to 2_28: Amazon Linux 2023 has glibc 2.34).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from fruits.errors import PermanentError

ARCHITECTURES = ("x86_64", "aarch64")  # `uname -m` of EMR's x86_64 and Graviton nodes
PYTHON_VERSION = (3, 11)  # bootstrap.sh's interpreter
MANYLINUX_GLIBC_MINORS = range(28, 4, -1)  # manylinux_2_28 ... 2_5: what compile-requirements.sh resolved for
COMPLETE = "COMPLETE"  # the marker of a folder whose build finished and was verified
BUILD_COMMAND = "make emr-wheelhouse"


class WheelhouseNotReady(PermanentError, RuntimeError):
    """The local wheelhouse of an architecture is missing, unfinished or not the requirements' files."""


@dataclass(frozen=True)
class Pin:
    """One requirement of requirements-emr.txt: `name==version [; marker]` and its allowed sha256s."""

    name: str  # canonical (PEP 503)
    version: str
    marker: str | None
    hashes: frozenset[str]
    text: str  # the requirement as written, without its marker and hashes

    def applies_to(self, arch: str) -> bool:
        from packaging.markers import Marker

        return self.marker is None or Marker(self.marker).evaluate(target_environment(arch))


def key(requirements: bytes) -> str:
    """Content hash of requirements-emr.txt: a changed file gives a new wheelhouse folder."""
    return hashlib.sha256(requirements).hexdigest()[:16]


def folder(root: Path, requirements: bytes, arch: str) -> Path:
    return Path(root).expanduser() / key(requirements) / arch


def target_environment(arch: str) -> dict[str, str]:
    """The marker environment of an EMR node's Python 3.11, not of the machine running this."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown node architecture {arch!r}: one of {ARCHITECTURES}")
    version = ".".join(map(str, PYTHON_VERSION))
    return {
        "platform_machine": arch,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "python_version": version,
        "python_full_version": f"{version}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_version": "",
        "implementation_version": f"{version}.0",
    }


def _blocks(text: str) -> list[str]:
    """The requirement lines of a pip requirements file, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\r?\n", " ", text)
    return [
        line.split(" #", 1)[0].strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def pins(text: str) -> list[Pin]:
    """Every pin of a hash-pinned requirements file (ValueError on anything else: the wheelhouse
    holds exactly what `pip install --require-hashes` accepts)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found = []
    for block in _blocks(text):
        spec, *options = re.split(r"\s+(?=--)", block)
        hashes = frozenset(o.split(":", 1)[1] for o in options if o.startswith("--hash=sha256:"))
        requirement = Requirement(spec)
        pinned = [s for s in requirement.specifier if s.operator == "=="]
        if len(requirement.specifier) != 1 or not pinned or not hashes:
            raise ValueError(f"not pinned to one version with sha256 hashes: {spec}")
        found.append(
            Pin(
                name=canonicalize_name(requirement.name),
                version=pinned[0].version,
                marker=str(requirement.marker) if requirement.marker else None,
                hashes=hashes,
                text=f"{requirement.name}=={pinned[0].version}",
            )
        )
    return found


def pins_for(text: str, arch: str) -> dict[str, Pin]:
    """The pins an `arch` node installs, by canonical name."""
    return {pin.name: pin for pin in pins(text) if pin.applies_to(arch)}


def requirements_for(text: str, arch: str) -> str:
    """requirements-emr.txt for one architecture: markers evaluated for it (pip would evaluate them
    for the machine it runs on), the hashes kept."""
    lines = [
        f"# requirements-emr.txt for {arch} nodes (markers evaluated for {arch}), made by "
        "fruits.backends.emr.wheelhouse"
    ]
    for pin in pins_for(text, arch).values():
        lines.append(" \\\n".join([pin.text, *(f"    --hash=sha256:{h}" for h in sorted(pin.hashes))]))
    return "\n".join(lines) + "\n"


def platforms(arch: str) -> list[str]:
    """The manylinux platform tags an `arch` node accepts, most specific first (pip download's
    --platform does not expand manylinux_2_28 to the older ones by itself)."""
    target_environment(arch)  # refuses an unknown architecture
    tags = [f"manylinux_2_{minor}_{arch}" for minor in MANYLINUX_GLIBC_MINORS]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{alias}_{arch}" for minor, alias in legacy.items() if minor in MANYLINUX_GLIBC_MINORS]


def supported_tags(arch: str) -> set:
    from packaging import tags

    names = platforms(arch)
    interpreter = f"cp{PYTHON_VERSION[0]}{PYTHON_VERSION[1]}"
    return {
        *tags.cpython_tags(PYTHON_VERSION, abis=[interpreter], platforms=names),
        *tags.compatible_tags(PYTHON_VERSION, interpreter, names),
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def problems(directory: Path, text: str, arch: str) -> tuple[dict[str, str], list[str]]:
    """({wheel file name: sha256}, what is wrong) for `directory` as the `arch` wheelhouse of the
    requirements `text`: a pinned package without its wheel, a file that is not one of its pin's
    files, a wheel an `arch` node's Python cannot install."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    wanted = pins_for(text, arch)
    accepted = supported_tags(arch)
    digests, wrong, present = {}, [], set()
    for path in sorted(Path(directory).glob("*.whl")):
        try:
            name, version, _, wheel_tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            wrong.append(f"{path.name}: not a wheel file name")
            continue
        digests[path.name] = digest = sha256_of(path)
        pin = wanted.get(name)
        if pin is None:
            wrong.append(f"{path.name}: {name} is not pinned for {arch}")
        elif str(version) != pin.version:
            wrong.append(f"{path.name}: version {version}, pinned {pin.version}")
        elif digest not in pin.hashes:
            wrong.append(f"{path.name}: sha256 {digest[:12]}... is not one of the requirements' hashes")
        elif not set(wheel_tags) & accepted:
            wrong.append(f"{path.name}: does not install on Python {'.'.join(map(str, PYTHON_VERSION))} {arch}")
        else:
            present.add(name)
    missing = sorted(wanted.keys() - present)
    if missing:
        wrong.insert(0, f"no wheel for {', '.join(wanted[n].text for n in missing)}")
    return digests, wrong


def verify(directory: Path, text: str, arch: str) -> dict[str, str]:
    """{wheel file name: sha256} of a complete, correct `arch` wheelhouse; WheelhouseNotReady otherwise."""
    digests, wrong = problems(directory, text, arch)
    if wrong:
        raise WheelhouseNotReady(f"{directory} is not the {arch} wheelhouse of these requirements: " + "; ".join(wrong))
    return digests


def mark_complete(directory: Path, text: str, arch: str) -> dict[str, str]:
    """Verify `directory`, then write its COMPLETE marker (the files and their sha256)."""
    digests = verify(directory, text, arch)
    (Path(directory) / COMPLETE).write_text(json.dumps({"arch": arch, "wheels": digests}, indent=1) + "\n")
    return digests


def ready(root: Path, requirements: bytes, arch: str) -> tuple[Path, dict[str, str]]:
    """The `arch` wheelhouse of `requirements` under `root` and its files' sha256, checked again;
    WheelhouseNotReady with a one-line message saying how to build it otherwise."""
    directory = folder(root, requirements, arch)
    how = f"run `{BUILD_COMMAND}` on the machine running the DAG (FRUITS_EMR_WHEELHOUSE={root})"
    if not (directory / COMPLETE).is_file():
        state = "unfinished (no COMPLETE marker)" if directory.is_dir() else "missing"
        raise WheelhouseNotReady(
            f"the {arch} wheelhouse of requirements-emr.txt {key(requirements)} is {state} "
            f"at {directory}: {how}; nothing was uploaded"
        )
    try:
        return directory, verify(directory, requirements.decode("utf-8"), arch)
    except WheelhouseNotReady as exc:
        raise WheelhouseNotReady(f"{exc}: {how}; nothing was uploaded") from None
