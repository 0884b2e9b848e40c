"""The EMR wheelhouse: the per-architecture requirements, the builder (on tiny synthetic wheels from a
local folder: no index, no TensorFlow), the verification of a folder, its upload next to the code
(moto in-process) and the bootstrap action that installs from it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SPARK_JOBS, make_wheel, synthetic_wheelhouse
from fruits.backends.emr import cluster, code, tasks, wheelhouse
from fruits.settings import Settings
from fruits_dev import wheelhouse as builder

REQUIREMENTS_EMR = SPARK_JOBS / "emr" / "requirements-emr.txt"
BOOTSTRAP = SPARK_JOBS / "emr" / "bootstrap.sh"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """spark_jobs/ with a synthetic requirements file, and its wheelhouse for both architectures made
    by the builder (conftest.synthetic_wheelhouse, which the EMR integration tests run on too)."""
    made = synthetic_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
    folders = {arch: made[f"folder_{arch}"] for arch in wheelhouse.ARCHITECTURES}
    return {
        "requirements": made["requirements"],
        "root": made["wheelhouse"],
        "index": made["index"],
        "spark_jobs": made["spark_jobs"],
        "folders": folders,
    }


def copy_of(built, tmp_path: Path) -> tuple[Path, bytes]:
    """A wheelhouse root a test may damage, and the requirements it was built for."""
    root = tmp_path / "cache"
    shutil.copytree(built["root"], root)
    return root, built["requirements"].read_bytes()


def wheels_in(folder: Path) -> list[str]:
    return sorted(path.name.split("-", 1)[0] for path in folder.glob("*.whl"))


def wheels_in_names(built, arch: str) -> list[str]:
    return [path.name for path in built["folders"][arch].glob("*.whl")]


# ----------------------------------------------------------------------------- one requirements file per architecture


@pytest.mark.parametrize(
    "arch, wanted, unwanted", [("x86_64", "tensorflow-cpu", "tensorflow"), ("aarch64", "tensorflow", "tensorflow-cpu")]
)
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
    pin = wheelhouse.pins(
        "x==1 ; platform_machine == 'aarch64' and sys_platform == 'linux' "
        "and python_version >= '3.11' --hash=sha256:" + "0" * 64
    )[0]
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
    again = builder.build(
        built["requirements"], root, ("x86_64",), pip_args=["--no-index", "--find-links", str(empty_index)]
    )
    assert wheels_in(again["x86_64"]) == ["fruit_common", "fruit_x86"]


def test_a_complete_folder_damaged_since_is_downloaded_again(built, tmp_path):
    root, content = copy_of(built, tmp_path)
    folder = wheelhouse.folder(root, content, "aarch64")
    next(folder.glob("fruit_arm-*.whl")).unlink()  # the marker stays
    builder.build(
        built["requirements"], root, ("aarch64",), pip_args=["--no-index", "--find-links", str(built["index"])]
    )
    assert wheels_in(folder) == ["fruit_arm", "fruit_common"]
    wheelhouse.ready(root, content, "aarch64")


def test_an_unfinished_folder_is_completed_not_taken_as_it_is(built, tmp_path):
    root, content = copy_of(built, tmp_path)
    folder = wheelhouse.folder(root, content, "x86_64")
    (folder / wheelhouse.COMPLETE).unlink()  # every file is there, but the build did not finish
    with pytest.raises(wheelhouse.WheelhouseNotReady, match=r"unfinished \(no COMPLETE marker\)"):
        wheelhouse.ready(root, content, "x86_64")
    next(folder.glob("fruit_x86-*.whl")).unlink()  # as a download cut short
    builder.build(
        built["requirements"], root, ("x86_64",), pip_args=["--no-index", "--find-links", str(built["index"])]
    )
    assert wheelhouse.ready(root, content, "x86_64")[1].keys() == {p.name for p in folder.glob("*.whl")}


def test_the_bootstraps_pip_command_installs_from_the_wheelhouse_without_an_index(built, tmp_path):
    """bootstrap.sh's own install command, run against a built folder (x86_64, this machine's)."""
    script = BOOTSTRAP.read_text().replace("\\\n", " ")
    [line] = [line for line in script.splitlines() if "-m pip install" in line]
    options = line.split("-m pip install", 1)[1].split()
    local = {
        '"${workdir}/wheels"': str(built["folders"]["x86_64"]),
        '"${workdir}/requirements.txt"': str(built["requirements"]),
    }
    assert set(local) <= set(options)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        *(local.get(o, o) for o in options),
        "--target",
        str(tmp_path / "site"),
    ]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "site").glob("fruit_*.py")) == ["fruit_common.py", "fruit_x86.py"]


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


# ----------------------------------------------------------------------------- upload next to the code


def jobs_with(built, tmp_path: Path) -> Path:
    """A copy of the synthetic spark_jobs/ a test may edit."""
    return Path(shutil.copytree(built["spark_jobs"], tmp_path / "spark_jobs"))


def test_the_wheelhouse_is_uploaded_content_addressed_for_the_needed_architecture_only(bucket, built, tmp_path):
    jobs = jobs_with(built, tmp_path)
    result = code.upload_code(bucket, jobs, wheelhouse_root=built["root"], architectures=["x86_64"])
    key = wheelhouse.key(built["requirements"].read_bytes())
    local = built["folders"]["x86_64"]
    assert bucket.list_keys("wheelhouse/") == sorted(f"wheelhouse/{key}/x86_64/{p.name}" for p in local.glob("*.whl"))
    for path in local.glob("*.whl"):
        assert bucket.read_bytes(f"wheelhouse/{key}/x86_64/{path.name}") == path.read_bytes()
    assert result["uris"]["wheelhouse"] == f"s3://{bucket.name}/wheelhouse/{key}/"
    assert result["architectures"] == ["x86_64"] and result["wheelhouse"]["key"] == key
    assert sorted(result["wheelhouse"]["uploaded"]) == sorted(f"x86_64/{p.name}" for p in local.glob("*.whl"))
    assert not result["wheelhouse"]["skipped"]


def test_reused_wheels_are_verified_and_only_a_new_architecture_is_uploaded(bucket, built, tmp_path, monkeypatch):
    jobs = jobs_with(built, tmp_path)
    code.upload_code(bucket, jobs, wheelhouse_root=built["root"], architectures=["x86_64"])
    checked = []
    real = type(bucket).sha256_of
    monkeypatch.setattr(type(bucket), "sha256_of", lambda self, key: checked.append(key) or real(self, key))
    again = code.upload_code(bucket, jobs, wheelhouse_root=built["root"], architectures=["aarch64", "x86_64"])
    assert sorted(again["wheelhouse"]["skipped"]) == sorted(f"x86_64/{n}" for n in wheels_in_names(built, "x86_64"))
    assert sorted(again["wheelhouse"]["uploaded"]) == sorted(f"aarch64/{n}" for n in wheels_in_names(built, "aarch64"))
    assert sorted(k.rsplit("/", 1)[1] for k in checked) == sorted(wheels_in_names(built, "x86_64"))


@pytest.mark.parametrize("change", ["other bytes", "other size", "extra file"])
def test_a_changed_wheelhouse_object_is_refused_before_anything_is_uploaded(bucket, built, tmp_path, change):
    jobs = jobs_with(built, tmp_path)
    first = code.upload_code(bucket, jobs, wheelhouse_root=built["root"], architectures=["x86_64"])
    prefix = f"wheelhouse/{first['wheelhouse']['key']}/x86_64/"
    [target] = [k for k in bucket.list_keys(prefix) if "fruit_common" in k]
    original = bucket.read_bytes(target)
    if change == "other bytes":
        bucket.write_bytes(target, original[:-1] + bytes([original[-1] ^ 1]))
    elif change == "other size":
        bucket.write_bytes(target, original + b"x")
    else:
        bucket.write_bytes(prefix + "evil-1.0-py3-none-any.whl", b"PK")
    (jobs / "pca.py").write_text((jobs / "pca.py").read_text() + "\n")  # a new code version to upload
    with pytest.raises(code.CodeMismatch, match=rf"s3://{bucket.name}/{prefix} holds files that differ") as refused:
        code.upload_code(bucket, jobs, wheelhouse_root=built["root"], architectures=["x86_64"])
    assert "nothing was run" in str(refused.value)
    expected = {
        "other bytes": r"fruit_common-\S+ \(sha256 [0-9a-f]{12}\.\.\., local",
        "other size": rf"fruit_common-\S+ \({len(original) + 1} bytes, local {len(original)}\)",
        "extra file": r"evil-1\.0-py3-none-any\.whl \(not in this wheelhouse\)",
    }[change]
    assert re.search(expected, str(refused.value)), str(refused.value)
    assert bucket.list_keys("code/") == sorted(f"code/{first['version']}/{n}" for n in first["uploaded"])


def test_no_wheelhouse_for_the_needed_architecture_fails_before_any_upload(bucket, built, tmp_path):
    jobs = jobs_with(built, tmp_path)
    with pytest.raises(wheelhouse.WheelhouseNotReady, match="make emr-wheelhouse"):
        code.upload_code(bucket, jobs, wheelhouse_root=tmp_path / "empty", architectures=["aarch64"])
    assert bucket.list_keys("") == []


# ----------------------------------------------------------------------------- architectures, bootstrap action


@pytest.mark.parametrize(
    "instance_type, arch",
    [
        ("m7g.xlarge", "aarch64"),
        ("c7g.4xlarge", "aarch64"),
        ("c7gn.2xlarge", "aarch64"),
        ("r8gd.xlarge", "aarch64"),
        ("a1.large", "aarch64"),
        ("m5.xlarge", "x86_64"),
        ("c7i.2xlarge", "x86_64"),
        ("m7i-flex.large", "x86_64"),
        ("g4dn.xlarge", "x86_64"),
        ("m7a.xlarge", "x86_64"),
    ],
)
def test_graviton_instance_types_are_aarch64(instance_type, arch):
    assert cluster.node_architecture(instance_type) == arch


def test_every_default_instance_type_has_an_architecture_the_builder_makes():
    from fruits.settings import DEFAULT_EMR_INSTANCE_TYPES

    archs = {cluster.node_architecture(t) for t in DEFAULT_EMR_INSTANCE_TYPES}
    assert archs == set(wheelhouse.ARCHITECTURES)


def params(**changes) -> dict:
    return {
        "master_instance_type": "m5.xlarge",
        "core_instance_type": "c7g.2xlarge",
        "core_instance_count": 2,
        "core_max_instance_count": 0,
        "core_spot": False,
        "release_label": "emr-7.13.0",
        "idle_timeout": 1800,
        **changes,
    }


def test_a_run_needs_the_architectures_of_its_nodes():
    assert tasks.node_architectures(params()) == ["aarch64", "x86_64"]
    assert tasks.node_architectures(params(core_instance_count=0)) == ["x86_64"]  # no core group
    assert tasks.node_architectures(params(master_instance_type="m7g.xlarge")) == ["aarch64"]


def test_a_run_uploads_the_wheelhouse_of_its_nodes_from_the_deployments_folder(bucket, built, tmp_path, monkeypatch):
    monkeypatch.setenv("FRUITS_SPARK_JOBS_DIR", str(built["spark_jobs"]))
    monkeypatch.setenv("FRUITS_EMR_WHEELHOUSE", str(built["root"]))
    graviton = tasks.upload_run_code(bucket, Settings(), params(master_instance_type="m7g.xlarge"))
    assert graviton["architectures"] == ["aarch64"]
    assert {k.split("/")[2] for k in bucket.list_keys("wheelhouse/")} == {"aarch64"}
    mixed = tasks.upload_run_code(bucket, Settings(), params())
    assert mixed["architectures"] == ["aarch64", "x86_64"]
    assert {k.split("/")[2] for k in bucket.list_keys("wheelhouse/")} == {"aarch64", "x86_64"}
    monkeypatch.setenv("FRUITS_EMR_WHEELHOUSE", str(tmp_path / "not-built"))
    with pytest.raises(wheelhouse.WheelhouseNotReady, match=rf"{tmp_path}/not-built.*make emr-wheelhouse"):
        tasks.upload_run_code(bucket, Settings(), params())


def test_the_bootstrap_action_gets_the_requirements_and_the_wheelhouse():
    uris = code.code_uris("fruits", "0123456789abcdef", "fedcba9876543210")
    request = tasks.job_flow_request(
        bucket="fruits",
        batch_id="b1",
        code={"uris": uris, "architectures": ["aarch64", "x86_64"]},
        settings=Settings(),
        params=params(),
        run_id="r",
        dag_id="fruits_pipeline",
    )
    [action] = request["BootstrapActions"]
    assert action["ScriptBootstrapAction"]["Args"] == [
        "s3://fruits/code/0123456789abcdef/requirements-emr.txt",
        "s3://fruits/wheelhouse/fedcba9876543210/",
    ]


def test_no_cluster_is_requested_without_the_wheels_of_one_of_its_architectures():
    uris = code.code_uris("fruits", "v", "k")
    with pytest.raises(ValueError, match="no aarch64 wheelhouse was uploaded for this run"):
        tasks.job_flow_request(
            bucket="fruits",
            batch_id="b1",
            code={"uris": uris, "architectures": ["x86_64"]},
            settings=Settings(),
            params=params(),
            run_id="r",
            dag_id="fruits_pipeline",
        )


def test_the_bootstrap_copies_its_architectures_folder_and_never_reaches_an_index():
    script = BOOTSTRAP.read_text().replace("\\\n", " ")
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    [copy] = [line for line in commands if "aws s3 cp" in line and "--recursive" in line]
    assert '"${wheelhouse_uri}/${machine}/"' in copy and "machine=$(uname -m)" in script
    [install] = [line for line in commands if "pip install" in line]
    assert "--no-index" in install and '--find-links "${workdir}/wheels"' in install
    assert "wheelhouse_uri=${2%/}" in script


def test_airflow_uploads_the_wheelhouse_and_the_nodes_only_read_it():
    from fruits.backends.emr import iam

    def resources(policy: dict, action: str) -> set[str]:
        return {
            r
            for s in policy["Statement"]
            if action in s["Action"]
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        }

    wheels = "arn:aws:s3:::fruits/wheelhouse/*"
    airflow, nodes = iam.airflow_role_policy(bucket="fruits"), iam.instance_role_policy(bucket="fruits")
    assert wheels in resources(airflow, "s3:PutObject") and wheels in resources(airflow, "s3:GetObject")
    assert wheels in resources(nodes, "s3:GetObject") and wheels not in resources(nodes, "s3:PutObject")
