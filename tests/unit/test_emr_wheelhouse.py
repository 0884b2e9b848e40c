"""The EMR wheelhouse: the per-architecture requirements, the builder (on tiny synthetic wheels from a
local folder: no index, no TensorFlow), the verification of a folder, its upload next to the code
(moto in-process) and the bootstrap action that installs from it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import SPARK_JOBS, make_wheel, synthetic_wheelhouse
from fruits.backends.emr import wheelhouse
from fruits.settings import Settings
from fruits_dev import wheelhouse as builder

REQUIREMENTS_EMR = SPARK_JOBS / "emr" / "requirements-emr.txt"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """spark_jobs/ with a synthetic requirements file, and its wheelhouse for both architectures made
    by the builder (conftest.synthetic_wheelhouse, which the EMR integration tests run on too)."""
    made = synthetic_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
    folders = {arch: made[f"folder_{arch}"] for arch in wheelhouse.ARCHITECTURES}
    return {"requirements": made["requirements"], "root": made["wheelhouse"], "index": made["index"],
            "spark_jobs": made["spark_jobs"], "folders": folders}


def copy_of(built, tmp_path: Path) -> tuple[Path, bytes]:
    """A wheelhouse root a test may damage, and the requirements it was built for."""
    root = tmp_path / "cache"
    shutil.copytree(built["root"], root)
    return root, built["requirements"].read_bytes()


def wheels_in(folder: Path) -> list[str]:
    return sorted(path.name.split("-", 1)[0] for path in folder.glob("*.whl"))


# ----------------------------------------------------------------------------- one requirements file per architecture

@pytest.mark.parametrize("arch, wanted, unwanted", [("x86_64", "tensorflow-cpu", "tensorflow"),
                                                    ("aarch64", "tensorflow", "tensorflow-cpu")])
def test_each_architecture_gets_its_own_tensorflow_with_the_hashes_kept(arch, wanted, unwanted):
    text = REQUIREMENTS_EMR.read_text()
    for_arch = wheelhouse.requirements_for(text, arch)
    names = [line.split("==")[0] for line in for_arch.splitlines() if re.match(r"[a-z0-9]", line)]
    assert wanted in names and unwanted not in names
    assert "platform_machine" not in for_arch  # evaluated for the target, not left to pip's machine
    original = {pin.name: pin for pin in wheelhouse.pins(text)}
    kept = wheelhouse.pins(for_arch)
    assert len(kept) == len(original) - 1
    for pin in kept:
        assert pin.hashes == original[pin.name].hashes and pin.version == original[pin.name].version
        assert pin.marker is None


def test_markers_are_evaluated_for_the_target_not_this_machine():
    pin = wheelhouse.pins("x==1 ; platform_machine == 'aarch64' and sys_platform == 'linux' "
                          "and python_version >= '3.11' --hash=sha256:" + "0" * 64)[0]
    assert pin.applies_to("aarch64") and not pin.applies_to("x86_64")
    with pytest.raises(ValueError, match="unknown node architecture"):
        pin.applies_to("arm64")


def test_only_hash_pinned_requirements_are_accepted():
    with pytest.raises(ValueError, match="not pinned to one version with sha256 hashes"):
        wheelhouse.pins("numpy>=1.26 --hash=sha256:" + "0" * 64)
    with pytest.raises(ValueError, match="not pinned to one version with sha256 hashes"):
        wheelhouse.pins("numpy==1.26.4\n")


def test_the_key_is_a_hash_of_the_requirements_content(tmp_path):
    text = REQUIREMENTS_EMR.read_bytes()
    assert re.fullmatch(r"[0-9a-f]{16}", wheelhouse.key(text))
    assert wheelhouse.key(text) != wheelhouse.key(text + b"\n")
    assert wheelhouse.folder(tmp_path, text, "aarch64") == tmp_path / wheelhouse.key(text) / "aarch64"


def test_the_default_wheelhouse_is_a_cache_outside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("FRUITS_EMR_WHEELHOUSE", raising=False)
    assert Settings().emr_wheelhouse == Path.home() / ".cache" / "fruits-pipeline" / "wheelhouse"
    monkeypatch.setenv("FRUITS_EMR_WHEELHOUSE", str(tmp_path))
    assert Settings().emr_wheelhouse == tmp_path


def test_pip_downloads_for_the_nodes_platform_not_this_machines(tmp_path):
    command = builder.pip_download_command(tmp_path / "r.txt", tmp_path, "aarch64")
    assert command[command.index("--python-version") + 1] == "3.11" and command[command.index("--abi") + 1] == "cp311"
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms[0] == "manylinux_2_28_aarch64" and "manylinux2014_aarch64" in platforms
    assert not [p for p in platforms if "x86_64" in p or "_2_29_" in p or "_2_34_" in p]
    for flag in ("--require-hashes", "--no-deps", "--only-binary"):
        assert flag in command


# ----------------------------------------------------------------------------- the builder

def test_the_builder_downloads_each_architectures_wheels_and_marks_the_folder(built):
    content = built["requirements"].read_bytes()
    for arch, others in (("x86_64", "fruit_arm"), ("aarch64", "fruit_x86")):
        folder = built["folders"][arch]
        assert folder == built["root"] / wheelhouse.key(content) / arch
        assert (folder / wheelhouse.COMPLETE).is_file()
        assert others not in wheels_in(folder) and "fruit_common" in wheels_in(folder)
    assert wheels_in(built["folders"]["x86_64"]) == ["fruit_common", "fruit_x86"]
    assert wheels_in(built["folders"]["aarch64"]) == ["fruit_arm", "fruit_common"]


def test_a_complete_folder_is_not_downloaded_again(built, tmp_path):
    root, _ = copy_of(built, tmp_path)
    empty_index = tmp_path / "nothing"
    empty_index.mkdir()
    again = builder.build(built["requirements"], root, ("x86_64",), pip_args=["--no-index", "--find-links",
                                                                                str(empty_index)])
    assert wheels_in(again["x86_64"]) == ["fruit_common", "fruit_x86"]


def test_an_unfinished_folder_is_completed_not_taken_as_it_is(built, tmp_path):
    root, content = copy_of(built, tmp_path)
    folder = wheelhouse.folder(root, content, "x86_64")
    (folder / wheelhouse.COMPLETE).unlink()
    next(folder.glob("fruit_x86-*.whl")).unlink()  # as a download cut short
    with pytest.raises(wheelhouse.WheelhouseNotReady, match="unfinished"):
        wheelhouse.ready(root, content, "x86_64")
    builder.build(built["requirements"], root, ("x86_64",), pip_args=["--no-index", "--find-links",
                                                                      str(built["index"])])
    assert wheelhouse.ready(root, content, "x86_64")[1].keys() == {p.name for p in folder.glob("*.whl")}


# ----------------------------------------------------------------------------- verification

def test_a_missing_wheel_is_refused(built, tmp_path):
    root, content = copy_of(built, tmp_path)
    next(wheelhouse.folder(root, content, "aarch64").glob("fruit_common-*.whl")).unlink()
    with pytest.raises(wheelhouse.WheelhouseNotReady, match=r"no wheel for fruit-common==1\.0") as refused:
        wheelhouse.ready(root, content, "aarch64")
    assert "make emr-wheelhouse" in str(refused.value) and "\n" not in str(refused.value)
    wheelhouse.ready(root, content, "x86_64")  # the other architecture is untouched


def test_a_wheel_with_another_hash_is_refused(built, tmp_path):
    root, content = copy_of(built, tmp_path)
    folder = wheelhouse.folder(root, content, "x86_64")
    make_wheel(folder, "fruit-x86", "1.0", "cp311-cp311-manylinux_2_17_x86_64", payload="import os\n")  # same name
    with pytest.raises(wheelhouse.WheelhouseNotReady, match=r"fruit_x86-1\.0-.*: sha256 [0-9a-f]{12}\.\.\. is not one"):
        wheelhouse.ready(root, content, "x86_64")


def test_a_file_the_architecture_does_not_pin_is_refused(built, tmp_path):
    root, content = copy_of(built, tmp_path)
    arm_wheel = next(wheelhouse.folder(root, content, "aarch64").glob("fruit_arm-*.whl"))
    shutil.copy2(arm_wheel, wheelhouse.folder(root, content, "x86_64"))
    with pytest.raises(wheelhouse.WheelhouseNotReady, match="fruit-arm is not pinned for x86_64"):
        wheelhouse.ready(root, content, "x86_64")


def test_a_wheel_the_nodes_python_cannot_install_is_refused(tmp_path):
    index = tmp_path / "index"
    wheel = make_wheel(index, "fruit-new", "1.0", "cp311-cp311-manylinux_2_34_x86_64")  # newer than manylinux_2_28
    text = f"fruit-new==1.0 --hash=sha256:{wheelhouse.sha256_of(wheel)}\n"
    with pytest.raises(wheelhouse.WheelhouseNotReady, match="does not install on Python 3.11 x86_64"):
        wheelhouse.verify(index, text, "x86_64")


def test_a_missing_wheelhouse_says_how_to_build_it(tmp_path):
    with pytest.raises(wheelhouse.WheelhouseNotReady, match=r"aarch64 wheelhouse .* is missing .*make emr-wheelhouse"):
        wheelhouse.ready(tmp_path, b"x==1 --hash=sha256:" + b"0" * 64, "aarch64")
