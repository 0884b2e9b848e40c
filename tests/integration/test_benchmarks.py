"""benchmarks/: every step runs, and the report's numbers hold together.

The benchmark is not a timed test. Here it runs on a tiny input (24 then 8 images at 32 px, a
1,000-row PCA) only to prove that each step works and that the JSON it writes is complete and
consistent; `make bench` is the real measurement.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SPARK_SUBMIT, job_env
from fruits_spark.inference import DEFAULT_RUNTIME, RUNTIMES

BENCH = ROOT / "benchmarks"


def bench_module(name: str):
    """benchmarks/<name>.py, imported by path (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # run.py imports procmon by name, as its own folder provides it
    spec.loader.exec_module(module)
    return module


procmon = bench_module("procmon")
bench = bench_module("run")
run_sampled = procmon.run_sampled

N, N_SMALL, SIZE, PCA_ROWS = 24, 8, 32, 1000


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench-work")
    out = tmp_path_factory.mktemp("bench-results")
    command = [
        sys.executable,
        str(BENCH / "run.py"),
        "--n",
        str(N),
        "--n-small",
        str(N_SMALL),
        "--image-size",
        str(SIZE),
        "--repeat",
        "1",
        "--skip-notebook",
        "--pca-rows",
        str(PCA_ROWS),
        "--warm-memory-gib",
        "0.25",
        "--out",
        str(out),
        "--work-dir",
        str(work),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=job_env(), cwd=ROOT, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc, json.loads((out / "latest.json").read_text(encoding="utf-8")), work, out


@pytest.mark.spark
def test_report_is_complete_and_consistent(bench_run):
    proc, result, _, out = bench_run
    stamped = [p for p in out.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1 and json.loads(stamped[0].read_text(encoding="utf-8")) == result
    assert f"2 featurize.py --runtime {DEFAULT_RUNTIME}" in proc.stdout and "PCA 1,000 x 1280" in proc.stdout
    assert all(f"1 ceiling, {runtime} " in proc.stdout for runtime in RUNTIMES)
    assert result["images"] == {
        "n": N,
        "n_small": N_SMALL,
        "image_size": SIZE,
        "source_px": 100,
        "classes": 8,
        "batch_size": 64,
        "weights": "none",
    }
    assert result["machine"]["cores"] >= 1 and result["machine"]["pyspark"]

    summaries = {**result["ceilings"], "featurize": result["featurize"]}
    assert list(result["ceilings"]) == list(RUNTIMES)  # every runtime, tensorflow included
    for _step, s in summaries.items():
        assert 0 < s["seconds_small"] and 0 < s["seconds"], s
        assert s["runs_small"] == [s["seconds_small"]] and s["runs"] == [s["seconds"]]
        assert s["end_to_end_images_per_s"] == pytest.approx(N / s["seconds"], abs=1e-3)
        assert s["peak_rss_mb"] > 100 and s["peak_rss_mb_small"] > 100 and s["cpu_seconds"] > 0
        cpu_small, cpu_large = np.median(s["cpu_runs_small"]), np.median(s["cpu_runs"])
        if cpu_large > cpu_small:
            assert s["marginal_cpu_ms_per_image"] == pytest.approx(
                1000 * (cpu_large - cpu_small) / (N - N_SMALL), abs=2e-3
            )
            assert s["fixed_cpu_seconds"] == pytest.approx(
                cpu_large - N * (cpu_large - cpu_small) / (N - N_SMALL), abs=2e-3
            )
        if s["seconds"] > s["seconds_small"]:  # tiny inputs: the difference may drown in noise
            marginal = (N - N_SMALL) / (s["seconds"] - s["seconds_small"])
            assert s["marginal_images_per_s"] == pytest.approx(marginal, rel=1e-3)
            assert s["fixed_seconds"] == pytest.approx(s["seconds"] - N / marginal, abs=1e-2)
        else:
            assert s["marginal_images_per_s"] is None and s["fixed_seconds"] is None

    for runtime, c in result["ceilings"].items():
        assert c["runtime"] == runtime
        assert c["inside_loop_images_per_s"] > 0 and 0 <= c["inside_decode_share"] <= 1
    f = result["featurize"]
    assert f["runtime"] == DEFAULT_RUNTIME and f["model_builds"] >= 1
    assert f["workers_loaded_tensorflow"] == 0  # the default runtime's workers never import TensorFlow
    assert any(line.endswith("features written") for line in f["phases"]), f["phases"]
    # The job's own timing starts after the JVM's start-up, so it is shorter than the wall clock.
    assert 0 < f["job_reported_seconds"] < f["seconds"]

    r, t = result["ratios"], result["targets"]
    c = result["ceilings"]["tensorflow"]
    assert r["featurize_vs_tensorflow_ceiling_end_to_end"] == pytest.approx(
        f["end_to_end_images_per_s"] / c["end_to_end_images_per_s"], abs=2e-3
    )
    assert r["featurize_peak_rss_growth"] == pytest.approx(f["peak_rss_mb"] / f["peak_rss_mb_small"], abs=2e-3)
    assert t["memory_flat_within_25pct"] == (r["featurize_peak_rss_growth"] <= 1.25)
    assert t["fixed_seconds_le_12"] == (None if f["fixed_seconds"] is None else f["fixed_seconds"] <= 12)
    own = result["ceilings"][DEFAULT_RUNTIME]
    for key, ceiling, target, bound in (
        ("featurize_vs_tensorflow_ceiling_marginal", c, "marginal_vs_tensorflow_ceiling_ge_1_6", 1.6),
        ("featurize_vs_runtime_ceiling_marginal", own, "marginal_vs_runtime_ceiling_ge_0_85", 0.85),
    ):
        if ceiling["marginal_images_per_s"] and f["marginal_images_per_s"]:
            assert r[key] == pytest.approx(f["marginal_images_per_s"] / ceiling["marginal_images_per_s"], abs=2e-3)
            assert t[target] == (r[key] >= bound)
        else:
            assert r[key] is None and t[target] is None
    assert r["ceiling_vs_tensorflow_ceiling_marginal"].keys() == result["ceilings"].keys()
    assert result["notebook"] is None and r["featurize_vs_notebook_end_to_end"] is None
    assert t["end_to_end_vs_notebook_ge_3"] is None
    assert result["machine"]["onnxruntime"] and result["machine"]["openvino"]

    p = result["pca"]
    assert (p["rows"], p["dim"], p["k"]) == (PCA_ROWS, 1280, 50)
    assert p["spark"]["seconds"] > 0 and p["numpy"]["seconds"] > 0
    assert p["spark_vs_numpy"] == pytest.approx(p["spark"]["seconds"] / p["numpy"]["seconds"], abs=2e-3)
    assert t["pca_within_3x"] == (p["spark_vs_numpy"] <= 3.0)
    # Both sides compute the same (centred) PCA.
    assert p["explained_variance_max_abs_diff"] < 1e-6
    assert p["solver"] == "batched" and "native_blas" not in p  # JVM BLAS plays no part in it
    assert p["spark_runs"] == [p["spark"]["seconds"]] and p["numpy_runs"] == [p["numpy"]["seconds"]]
    assert any("saved the model" in line for line in p["spark"]["phases"]), p["spark"]["phases"]

    floor = p["floor"]
    assert floor["inside"]["rows"] == PCA_ROWS and p["floor_runs"] == [floor["seconds"]]
    assert all(floor["inside"][phase] > 0 for phase in ("session_seconds", "first_pass_seconds", "second_pass_seconds"))
    assert floor["inside"]["seconds"] < floor["seconds"]  # inside the process, after the JVM started it
    assert p["floor_vs_numpy"] == pytest.approx(floor["seconds"] / p["numpy"]["seconds"], abs=2e-3)
    assert p["spark_above_floor_seconds"] == pytest.approx(p["spark"]["seconds"] - floor["seconds"], abs=1e-3)
    assert "Spark's floor under pca.py" in proc.stdout

    steps = [run["step"] for run in result["all_runs"]]
    per_size = ["ceiling"] * len(RUNTIMES) + ["featurize"]
    assert steps == ["featurize_cold"] + per_size + per_size + ["pca_numpy", "pca_spark", "pca_floor"]
    assert [run.get("runtime") for run in result["all_runs"][1 : 1 + len(per_size)]] == [*RUNTIMES, DEFAULT_RUNTIME]
    # The default: the timed featurize runs find the converted model in the cache the first (cold) job filled.
    featurize_runs = [run for run in result["all_runs"] if run["step"].startswith("featurize")]
    assert [run["model_cache"] for run in featurize_runs] == ["miss", "hit", "hit"]
    assert f["model_cache"] == "warm" and f["cold_seconds_small"] == result["all_runs"][0]["seconds"] > 0
    assert "first job (empty model cache)" in proc.stdout
    assert all(run["seconds"] > 0 and run["other_load_cores"] >= 0 for run in result["all_runs"])
    assert all(run["warm_memory_seconds"] > 0 for run in result["all_runs"])  # --warm-memory-gib 0.25


@pytest.mark.spark
def test_spark_floor_reads_every_row_and_writes_its_keys(bench_run):
    """The floor does the job's I/O for real: every input row reaches Python and comes out."""
    _, _, work, _ = bench_run
    written = pq.read_table(work / "pca_floor")
    given = pq.read_table(work / "pca_features", columns=["path", "label"])
    assert written.column_names == ["path", "label"] and written.num_rows == PCA_ROWS
    assert sorted(written.column("path").to_pylist()) == sorted(given.column("path").to_pylist())


def test_warm_memory_runs_and_gives_the_memory_back():
    process = psutil.Process()
    before = process.memory_info().rss
    assert bench.warm_memory(0) == 0.0
    assert bench.warm_memory(0.125) > 0
    assert process.memory_info().rss - before < 64 << 20  # the 128 MiB block is freed again


@pytest.mark.spark
@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_the_ceiling_computes_what_the_job_computes(bench_run, tmp_path, runtime):
    """Same decoding, network and weights on both sides, whatever the runtime: like for like."""
    _, _, work, _ = bench_run
    saved = tmp_path / "ceiling.npz"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "ceiling.py"),
            "--images",
            str(work / f"images_{N_SMALL}"),
            "--image-size",
            str(SIZE),
            "--runtime",
            runtime,
            "--save-features",
            str(saved),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=job_env(),
        timeout=300,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1])["runtime"] == runtime
    ceiling = np.load(saved)
    job = pq.read_table(work / "out_small" / "features").to_pandas().set_index("path")["features"]
    assert len(ceiling["paths"]) == len(job) == N_SMALL
    for path, vector in zip(ceiling["paths"], ceiling["features"]):
        expected = np.asarray(job["file:" + str(path)])
        assert np.abs(vector - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.spark
def test_notebook_recipe_writes_one_vector_per_image(tmp_path):
    images = tmp_path / "images"
    assert bench.generate_images(images, 6) == 6
    env = job_env()
    command = [
        str(SPARK_SUBMIT),
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        str(BENCH / "notebook_recipe.py"),
        "--images",
        str(images),
        "--output",
        str(tmp_path / "out"),
        "--image-size",
        str(SIZE),
        "--partitions",
        "2",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "notebook_recipe: images=6 " in proc.stdout
    table = pq.read_table(tmp_path / "out")
    matrix = np.stack(table.column("features").to_numpy(zero_copy_only=False))
    assert matrix.shape == (6, 1280) and np.isfinite(matrix).all()


def test_two_sizes_separate_fixed_and_per_image_cost():
    model = bench.two_size_model(300, 13.0, 1200, 22.0)  # 900 images in 9 s -> 100/s, 10 s fixed
    assert model["marginal_images_per_s"] == pytest.approx(100.0)
    assert model["fixed_seconds"] == pytest.approx(10.0)
    assert model["end_to_end_images_per_s"] == pytest.approx(1200 / 22.0, abs=1e-3)
    noisy = bench.two_size_model(8, 20.0, 24, 19.5)
    assert noisy["marginal_images_per_s"] is None and noisy["fixed_seconds"] is None


def test_peak_rss_covers_the_whole_process_tree():
    """A grandchild holding ~300 MB for a moment must show up in the peak."""
    grandchild = "import time; b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    started = time.perf_counter()
    finished = run_sampled([sys.executable, "-c", child], interval=0.05)
    assert finished.returncode == 0
    assert finished.peak_rss_bytes > 300 * 1024 * 1024
    assert finished.peak_processes >= 2
    assert 1.5 <= finished.seconds <= time.perf_counter() - started + 0.01


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PSS is Linux's")
def test_pages_shared_with_a_forked_child_count_once():
    """A JVM forking a helper shares its pages with it: the tree holds them once, not twice."""
    script = (
        "import os, time; b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); "
        "pid = os.fork(); time.sleep(1.5); os._exit(0) if pid == 0 else os.waitpid(pid, 0)"
    )
    finished = run_sampled([sys.executable, "-c", script], interval=0.05)
    assert finished.returncode == 0 and finished.peak_processes == 2
    assert 300 * 1024 * 1024 < finished.peak_rss_bytes < 450 * 1024 * 1024


def test_pss_reads_stay_within_their_time_budget(monkeypatch):
    """PSS reads walk page tables: the sampler spends at most `pss_budget` of the run on them
    (plus the one read that opens a budget window), however often it samples RSS."""
    spent: list[float] = []
    real = procmon.resident_bytes

    def timed(proc):
        started = time.perf_counter()
        try:
            return real(proc)
        finally:
            spent.append(time.perf_counter() - started)
            time.sleep(0.005)  # a costly read, as for a JVM's gigabytes

    monkeypatch.setattr(procmon, "resident_bytes", timed)
    script = "import time; b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    finished = run_sampled([sys.executable, "-c", script], interval=0.01, pss_budget=0.05)
    assert finished.returncode == 0 and finished.peak_rss_bytes > 200 * 1024 * 1024
    assert finished.samples > 3 * len(spent) > 0  # most samples read RSS only
    reads = [seconds + 0.005 for seconds in spent]
    assert sum(reads) <= 0.05 * finished.seconds + max(reads)


def test_native_blas_status_reads_sparks_output():
    assert (
        bench.native_blas_status(
            "netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) failed: libblas.so.3: cannot open shared object file"
        )
        == "inactive"
    )
    assert bench.native_blas_status("INFO InstanceBuilder: Using dev.ludovic.netlib.blas.JNIBLAS") == "active"


def test_generated_inputs(tmp_path):
    assert bench.generate_images(tmp_path / "img", 20) == 20
    folders = [p for p in (tmp_path / "img").iterdir() if p.is_dir()]
    assert len(folders) == 16 and sum(len(list(p.glob("*.jpg"))) for p in folders) == 20

    bench.generate_features(tmp_path / "feat", 600, 1280)
    table = pq.read_table(tmp_path / "feat")
    matrix = np.stack(table.column("features").to_numpy(zero_copy_only=False)).astype(np.float64)
    assert (
        matrix.shape == (600, 1280)
        and matrix.min() >= 0
        and str(table.schema.field("features").type) == "list<element: float>"
    )
    eigenvalues = np.linalg.eigvalsh(np.cov(matrix, rowvar=False))[::-1]
    ratios = eigenvalues / eigenvalues.sum()
    assert ratios[0] > ratios[9] > ratios[40] and math.isclose(ratios.sum(), 1.0)
