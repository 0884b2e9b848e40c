"""Featurization and PCA benchmarks, side by side in one run (`make bench`).

    python benchmarks/run.py [--n 1200] [--n-small N/4] [--image-size 224] [--repeat 3]
                             [--runtime onnx] [--ceiling-runtimes tensorflow,onnx,openvino]
                             [--pca-rows 100000] [--pca-solver batched|spark-ml] [--skip-featurize]
                             [--skip-notebook] [--skip-pca] [--out benchmarks/results]

On generated Fruits-360-like images (100x100 JPEGs in 16 class folders, `fruits_dev.samples`) with
`--weights none` (seeded MobileNetV2, nothing to download) it measures:

1. ceilings  - benchmarks/ceiling.py once per inference runtime (`--ceiling-runtimes`): one Python
               process decoding, resizing and running MobileNetV2 (batch 64) on all cores, no Spark;
               TensorFlow's (a tf.function with a fixed signature) is the reference of the targets;
2. featurize - spark_jobs/featurize.py --runtime R (default: the job's default runtime) through
               spark-submit in local mode on all cores, end to end (read, featurize, write parquet),
               with the peak memory of its whole process tree;
3. notebook  - benchmarks/notebook_recipe.py, the usual notebook recipe (repartition(24), model
               rebuilt in every task, model.predict per Arrow batch), at n only.

1 and 2 run at two sizes, interleaved, `--repeat` times each (the fastest run of each size
counts), so that the per-image cost and the fixed start-up cost come apart:
marginal images/s = (n - n_small) / (t(n) - t(n_small)), fixed s = t(n) - n / marginal.
Every time is the wall clock of a whole process, start-up included, as a user sees it. Before
each timed run the bench touches and frees `--warm-memory-gib` of memory (see `warm_memory`).
PCA: spark_jobs/pca.py --k 50 on a generated rows x 1280 float32 features parquet, end to end,
against numpy (covariance + eigh) on the same matrix in one process, and against Spark's floor
(benchmarks/spark_floor.py: the job's session and two passes over the data, without computing);
`--repeat` runs of each, alternated, the fastest of each counts.

Run it as a script: the project is installed (editable) in the venv, and this folder's own
modules (procmon) are found beside the script. Prints a table and writes <out>/<timestamp>.json
and <out>/latest.json (fields: results/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SPARK_JOBS = ROOT / "spark_jobs"

from procmon import Finished, run_sampled  # noqa: E402 - benchmarks/procmon.py, beside this script

from fruits_dev import spark_cds  # noqa: E402
from fruits_spark.inference import DEFAULT_RUNTIME, RUNTIMES  # noqa: E402 - no TensorFlow, no runtime

SCHEMA_VERSION = 2
CLASSES = 16
SOURCE_PX = 100  # Fruits-360 images are 100x100 JPEGs
PCA_DIM = 1280
PCA_K = 50
MB = 1024 * 1024


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def python_env() -> dict[str, str]:
    """Environment of every measured process: this interpreter for Spark's Python (the project is
    installed in it), the same JVM start-up options for every spark-submit."""
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Every spark-submit (featurize.py, the notebook recipe, pca.py) starts its JVM the same way.
    return spark_cds.with_startup_options(env)


def spark_submit_bin() -> str:
    candidate = Path(sys.executable).parent / "spark-submit"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("spark-submit")
    if not found:
        raise SystemExit("spark-submit not found next to this Python nor on PATH (run `make venv`)")
    return found


def spark_command(script: Path, args: list[str], *, driver_memory: str, confs: list[str]) -> list[str]:
    command = [
        spark_submit_bin(),
        "--master",
        "local[*]",
        "--driver-memory",
        driver_memory,
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.ui.showConsoleProgress=false",
        "--conf",
        "spark.log.level=WARN",
    ]
    for conf in confs:
        command += ["--conf", conf]
    return command + [str(script), *args]


def cpu_busy_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine since boot (all cores).

    Stolen time is CPU the hypervisor gave to other virtual machines: invisible load.
    """
    t = psutil.cpu_times()
    steal = getattr(t, "steal", 0.0)
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - steal, steal


def warm_memory(gib: float) -> float:
    """Touch and free `gib` GiB of memory; return the seconds it took (not part of any timing).

    Virtual machines with free page reporting (virtio-balloon, e.g. Firecracker) hand memory that
    stayed free for a few seconds back to the host, and the next first touch of it is slow (several
    seconds per GiB on the machine of benchmarks/results/README.md). A process that allocates
    gigabytes at once (the numpy PCA reference) then pays for it depending only on how long the
    memory had been free. Touched just before each timed run, every contender starts on the same
    (warm) memory.
    """
    if gib <= 0:
        return 0.0
    import numpy as np

    started = time.perf_counter()
    block = np.empty(int(gib * (1 << 30)), dtype=np.uint8)
    block[::4096] = 1  # one write per 4 KiB page
    del block
    return time.perf_counter() - started


def run_measured(name: str, command: list[str], env: dict[str, str], args) -> tuple[Finished, dict]:
    """Run `command` (after `warm_memory(args.warm_memory_gib)`, within `args.timeout`); return the
    process record and a summary (wall, peak RSS, CPU, machine load)."""
    warm_s = warm_memory(args.warm_memory_gib)
    busy_before, steal_before = cpu_busy_seconds()
    proc = run_sampled(command, env=env, cwd=str(ROOT), timeout=args.timeout)
    busy_after, steal_after = cpu_busy_seconds()
    busy, steal = busy_after - busy_before, steal_after - steal_before
    if proc.returncode != 0:
        raise SystemExit(
            f"{name} failed (exit {proc.returncode}): {' '.join(command)}\n"
            f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    cores = psutil.cpu_count() or 1
    record = {
        "seconds": round(proc.seconds, 3),
        "peak_rss_mb": round(proc.peak_rss_bytes / MB, 1),
        "peak_processes": proc.peak_processes,
        # Resident memory (PSS) of each process at the moment of the peak, largest first.
        "peak_breakdown_mb": [[name, round(rss / MB, 1)] for name, rss in proc.peak_breakdown],
        "cpu_seconds": proc.cpu_seconds,
        # CPU that other processes of the machine used meanwhile, in cores (~0 on a quiet machine).
        "other_load_cores": round(max(0.0, busy - proc.cpu_seconds) / proc.seconds, 2) if proc.seconds else 0.0,
        "machine_busy_fraction": round(busy / (proc.seconds * cores), 3) if proc.seconds else 0.0,
        # CPU taken by the hypervisor for other virtual machines, in cores.
        "steal_cores": round(steal / proc.seconds, 2) if proc.seconds else 0.0,
        "warm_memory_seconds": round(warm_s, 2),
    }
    return proc, record


def summary_line(text: str, prefix: str) -> dict[str, str]:
    """The `<prefix>: key=value ...` line a job prints at the end."""
    lines = [line for line in text.splitlines() if line.startswith(prefix + ": ")]
    if not lines:
        return {}
    return dict(item.split("=", 1) for item in lines[-1][len(prefix) + 2 :].split() if "=" in item)


def two_size_model(n_small: int, t_small: float, n: int, t_large: float) -> dict:
    """Marginal rate and fixed cost: the straight line through (n_small, t_small) and (n, t_large)."""
    out = {
        "n_small": n_small,
        "n": n,
        "seconds_small": round(t_small, 3),
        "seconds": round(t_large, 3),
        "end_to_end_images_per_s": round(n / t_large, 3) if t_large > 0 else None,
        "marginal_images_per_s": None,
        "fixed_seconds": None,
    }
    if n > n_small and t_large > t_small:
        marginal = (n - n_small) / (t_large - t_small)
        out["marginal_images_per_s"] = round(marginal, 3)
        out["fixed_seconds"] = round(t_large - n / marginal, 3)
    return out


def cpu_model(n_small: int, cpu_small: list[float], n: int, cpu_large: list[float]) -> dict:
    """Per-image and fixed CPU seconds from the median CPU time of the process tree at each size.

    CPU time is what the runs consumed, whatever else the machine ran: on a shared machine, where
    other processes take cores at random moments, it still compares the contenders when their
    wall clocks do not (each wall clock then depends on who else ran meanwhile).
    """
    small, large = statistics.median(cpu_small), statistics.median(cpu_large)
    if n <= n_small or large <= small:
        return {"marginal_cpu_ms_per_image": None, "fixed_cpu_seconds": None}
    per_image = (large - small) / (n - n_small)
    return {
        "marginal_cpu_ms_per_image": round(per_image * 1000, 3),
        "fixed_cpu_seconds": round(large - n * per_image, 3),
    }


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


# --------------------------------------------------------------------------- inputs


def generate_images(root: Path, n: int) -> int:
    """n Fruits-360-like 100x100 JPEGs over up to CLASSES label folders (same files for any n)."""
    from fruits_dev.samples import DEFAULT_LABELS, generate_samples

    classes = min(CLASSES, n)
    written = 0
    for i, label in enumerate(DEFAULT_LABELS[:classes]):
        per_class = n // classes + (1 if i < n % classes else 0)
        written += len(generate_samples(root, labels=[label], per_class=per_class, image_size=SOURCE_PX, seed=0).images)
    return written


def generate_features(folder: Path, rows: int, dim: int, seed: int = 11, files: int = 4) -> None:
    """rows x dim float32 'features' like MobileNetV2's: non-negative, far from centred, decaying spectrum."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    latent_dim = 64
    scales = 3.0 * 0.9 ** np.arange(latent_dim)
    mixing = rng.normal(size=(latent_dim, dim)) / math.sqrt(latent_dim)
    offset = rng.uniform(0.5, 2.0, size=dim)
    labels = ["Apple Red 1", "Banana", "Kiwi", "Pear Monster"]
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for part, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        m = int(hi - lo)
        latent = rng.normal(size=(m, latent_dim)) * scales
        matrix = np.maximum(offset + latent @ mixing + rng.normal(scale=0.05, size=(m, dim)), 0.0)
        values = pa.array(matrix.astype(np.float32).ravel())
        offsets = pa.array(np.arange(0, m * dim + 1, dim, dtype=np.int32))
        table = pa.table(
            {
                "path": [f"file:/bench/{labels[i % 4]}/img_{i}.jpg" for i in range(lo, hi)],
                "label": [labels[i % 4] for i in range(lo, hi)],
                "features": pa.ListArray.from_arrays(offsets, values),
            }
        )
        pq.write_table(table, folder / f"part-{part:05d}.parquet", row_group_size=8192)


# --------------------------------------------------------------------------- steps


def run_ceiling(images: Path, runtime: str, args) -> dict:
    command = [
        sys.executable,
        str(BENCH / "ceiling.py"),
        "--images",
        str(images),
        "--runtime",
        runtime,
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
    ]
    proc, record = run_measured(f"ceiling ({runtime})", command, python_env(), args)
    inside = json.loads(proc.stdout.strip().splitlines()[-1])
    record["inside"] = inside
    record["images"] = inside["images"]
    return record


def job_phases(text: str, job: str) -> list[str]:
    """'<seconds>s <message>' for each log line of a job, timed from its first (where the time goes)."""
    stamps = []
    for line in text.splitlines():
        m = re.match(rf"(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}}) {job} (?:INFO|WARNING) (.*)", line)
        if m and "clientserver" not in m.group(2):
            stamp = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.append((stamp, m.group(2)))
    if not stamps:
        return []
    first = stamps[0][0]
    return [f"{t - first:7.2f}s {message[:100]}" for t, message in stamps]


def run_featurize(images: Path, out: Path, args, model_cache: Path | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    job_args = [
        "--images",
        str(images),
        "--output",
        str(out / "features"),
        "--rejects",
        str(out / "rejects"),
        "--weights",
        "none",
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--runtime",
        args.runtime,
        *(["--model-cache", str(model_cache)] if model_cache else []),
    ]
    command = spark_command(
        Path(args.spark_jobs) / "featurize.py", job_args, driver_memory=args.driver_memory, confs=featurize_confs(args)
    )
    proc, record = run_measured("featurize", command, python_env(), args)
    text = proc.stdout + proc.stderr  # spark-submit passes the Python driver's stderr to its stdout
    summary = summary_line(proc.stdout, "featurize")
    record["images"] = int(summary.get("featurized", -1))
    record["rejected"] = int(summary.get("rejected", -1))
    record["runtime"] = summary.get("runtime", args.runtime)
    record["job_reported_seconds"] = float(summary.get("seconds", "nan"))
    record["model_builds"] = len(re.findall(r"built MobileNetV2", text))
    record["model_cache"] = "hit" if "model cache hit" in text else "miss" if "model cache miss" in text else "off"
    record["workers_loaded_tensorflow"] = len(re.findall(r"built MobileNetV2.*TensorFlow loaded: yes", text))
    record["phases"] = job_phases(text, "featurize")
    return record


def featurize_confs(args) -> list[str]:
    confs = list(args.conf)
    if args.task_cpus:
        confs.append(f"spark.task.cpus={args.task_cpus}")
    return confs


def run_notebook(images: Path, out: Path, args) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    script_args = ["--images", str(images), "--output", str(out), "--image-size", str(args.image_size)]
    command = spark_command(
        BENCH / "notebook_recipe.py", script_args, driver_memory=args.driver_memory, confs=list(args.conf)
    )
    proc, record = run_measured("notebook recipe", command, python_env(), args)
    summary = summary_line(proc.stdout, "notebook_recipe")
    record["images"] = int(summary.get("images", -1))
    record["end_to_end_images_per_s"] = round(record["images"] / record["seconds"], 3)
    return record


def native_blas_status(text: str) -> str:
    """'active', 'inactive' or 'unknown' (BLAS never used), from a Spark ML job's output.

    netlib prints `dlopen(libblas.so.3) failed` (native stderr, whatever the log level) when it
    falls back to Java, and logs `Using dev.ludovic.netlib.blas.JNIBLAS` at INFO when it does not.
    """
    if re.search(r"dlopen\(libblas\.so\.3\) failed|Failed to load implementation from:.*JNIBLAS", text):
        return "inactive"
    if "JNIBLAS" in text or libblas_present():
        return "active"
    return "unknown"


def libblas_present() -> bool:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(re.search(r"\blibblas\.so\.3\b", out) and re.search(r"\bliblapack\.so\.3\b", out))


def run_pca(work: Path, args) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """PCA comparison: (summary, numpy runs, pca.py runs, Spark floor runs)."""
    features = work / "pca_features"
    log(f"generating {args.pca_rows:,} x {PCA_DIM} float32 features")
    started = time.perf_counter()
    generate_features(features, args.pca_rows, PCA_DIM)
    generated_s = time.perf_counter() - started

    numpy_runs, spark_runs, floor_runs = [], [], []
    # What each run computed and printed, kept beside its record (the records go to the JSON).
    numpy_variances, spark_variances, spark_texts = [], [], []
    for repeat in range(args.repeat):  # alternated, so that a noisy minute does not favour one side
        log(f"numpy PCA (one process), run {repeat + 1}/{args.repeat}")
        command = [
            sys.executable,
            str(BENCH / "numpy_pca.py"),
            "--features",
            str(features),
            "--k",
            str(PCA_K),
            "--output",
            str(work / "pca_numpy"),
        ]
        proc, record = run_measured("numpy PCA", command, python_env(), args)
        record["inside"] = json.loads(proc.stdout.strip().splitlines()[-1])
        numpy_variances.append(record["inside"].pop("explained_variance"))
        record["repeat"] = repeat
        numpy_runs.append(record)

        log(f"spark_jobs/pca.py --solver {args.pca_solver}, run {repeat + 1}/{args.repeat}")
        out = work / "pca_spark"
        shutil.rmtree(out, ignore_errors=True)
        report = work / "pca_report.json"
        job_args = [
            "--features",
            str(features),
            "--output",
            str(out / "vectors"),
            "--model",
            str(out / "model"),
            "--k",
            str(PCA_K),
            "--report",
            str(report),
            "--solver",
            args.pca_solver,
        ]
        command = spark_command(
            SPARK_JOBS / "pca.py", job_args, driver_memory=args.pca_driver_memory, confs=list(args.conf)
        )
        proc, record = run_measured("pca.py", command, python_env(), args)
        text = proc.stdout + proc.stderr
        record["phases"] = job_phases(text, "pca")
        record["repeat"] = repeat
        spark_variances.append(json.loads(report.read_text())["explained_variance"])
        spark_texts.append(text)
        spark_runs.append(record)

        log(f"Spark's floor under pca.py (its two passes, no computing), run {repeat + 1}/{args.repeat}")
        command = spark_command(
            BENCH / "spark_floor.py",
            ["--features", str(features), "--output", str(work / "pca_floor")],
            driver_memory=args.pca_driver_memory,
            confs=list(args.conf),
        )
        proc, record = run_measured("Spark floor", command, python_env(), args)
        record["inside"] = json.loads(proc.stdout.strip().splitlines()[-1])
        if record["inside"]["rows"] != args.pca_rows:
            raise SystemExit(f"the Spark floor read {record['inside']['rows']} of {args.pca_rows} rows")
        record["repeat"] = repeat
        floor_runs.append(record)
        log(
            f"  numpy {numpy_runs[-1]['seconds']:.1f} s, pca.py {spark_runs[-1]['seconds']:.1f} s, "
            f"Spark floor {floor_runs[-1]['seconds']:.1f} s"
        )

    best_numpy = min(range(len(numpy_runs)), key=lambda i: numpy_runs[i]["seconds"])
    best_spark = min(range(len(spark_runs)), key=lambda i: spark_runs[i]["seconds"])
    numpy_record, spark_record = numpy_runs[best_numpy], spark_runs[best_spark]
    floor_record = min(floor_runs, key=lambda rec: rec["seconds"])
    theirs, ours, text = numpy_variances[best_numpy], spark_variances[best_spark], spark_texts[best_spark]
    result = {
        "rows": args.pca_rows,
        "dim": PCA_DIM,
        "k": PCA_K,
        "solver": args.pca_solver,
        "generate_seconds": round(generated_s, 2),
        "spark": spark_record,
        "numpy": numpy_record,
        "spark_runs": [r["seconds"] for r in spark_runs],
        "numpy_runs": [r["seconds"] for r in numpy_runs],
        "spark_vs_numpy": ratio(spark_record["seconds"], numpy_record["seconds"]),
        "floor": floor_record,
        "floor_runs": [r["seconds"] for r in floor_runs],
        "floor_vs_numpy": ratio(floor_record["seconds"], numpy_record["seconds"]),
        "spark_above_floor_seconds": round(spark_record["seconds"] - floor_record["seconds"], 3),
        "explained_variance_max_abs_diff": float(max(abs(a - b) for a, b in zip(ours, theirs))),
    }
    if args.pca_solver == "spark-ml":  # the only solver whose speed depends on the JVM's BLAS
        result.update(
            {
                "native_blas": native_blas_status(text),
                "libblas_so_3_present": libblas_present(),
                "blas_log_lines": sorted(
                    {
                        line.strip()[:200]
                        for line in text.splitlines()
                        if re.search(r"BLAS|LAPACK|libblas|liblapack", line)
                    }
                )[:8],
            }
        )
    return result, numpy_runs, spark_runs, floor_runs


# --------------------------------------------------------------------------- report


def bytecode_cached(module: str) -> bool | None:
    """Does `module` have compiled bytecode next to it? Without it (uv installs none, and
    PYTHONDONTWRITEBYTECODE=1 stops Python writing it) each process recompiles it from source:
    about 5 s of CPU for TensorFlow + Keras, paid by every process that imports them."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(importlib.util.cache_from_source(spec.origin)).exists()


def cpu_flags(wanted: tuple[str, ...]) -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return [flag for flag in wanted if flag in line.split(":", 1)[1].split()]
    except OSError:
        pass
    return []


def machine_info() -> dict:
    import importlib.metadata as md

    def version(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60).stderr.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        java = None
    return {
        "cores": psutil.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "pyspark": version("pyspark"),
        "tensorflow": version("tensorflow-cpu") or version("tensorflow"),
        "keras": version("keras"),
        "pillow": version("pillow"),
        "numpy": version("numpy"),
        "onnxruntime": version("onnxruntime"),
        "tf2onnx": version("tf2onnx"),
        "openvino": version("openvino"),
        "machine": platform.machine(),
        # OpenVINO's default CPU precision is bf16 where these exist (the runtimes are set to f32).
        "cpu_bf16_flags": cpu_flags(("avx512_bf16", "amx_bf16")),
        "java": java,
        "spark_submit_opts": python_env().get("SPARK_SUBMIT_OPTS"),  # JIT thresholds, class-data-sharing archive
        "tensorflow_bytecode_cached": bytecode_cached("tensorflow"),
        "libblas_so_3_present": libblas_present(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def fmt(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{value:,.{digits}f}"


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def featurize_table(result: dict) -> list[str]:
    ceilings, f, nb = result["ceilings"], result["featurize"], result["notebook"]
    r, t = result["ratios"], result["targets"]
    n, ns = result["images"]["n"], result["images"]["n_small"]
    rows = [
        (
            "",
            "images/s marginal",
            "fixed s",
            f"s @ {ns}",
            f"s @ {n}",
            f"images/s e2e @ {n}",
            "CPU ms/image",
            "fixed CPU s",
            "peak MB",
        )
    ]
    for runtime, c in ceilings.items():
        rows.append(
            (
                f"1 ceiling, {runtime} (1 process, no Spark)",
                fmt(c["marginal_images_per_s"]),
                fmt(c["fixed_seconds"]),
                fmt(c["seconds_small"]),
                fmt(c["seconds"]),
                fmt(c["end_to_end_images_per_s"]),
                fmt(c["marginal_cpu_ms_per_image"], 2),
                fmt(c["fixed_cpu_seconds"]),
                fmt(c["peak_rss_mb"], 0),
            )
        )
    rows.append(
        (
            f"2 featurize.py --runtime {f['runtime']}"
            + (", model cache warm" if f.get("model_cache") == "warm" else ""),
            fmt(f["marginal_images_per_s"]),
            fmt(f["fixed_seconds"]),
            fmt(f["seconds_small"]),
            fmt(f["seconds"]),
            fmt(f["end_to_end_images_per_s"]),
            fmt(f["marginal_cpu_ms_per_image"], 2),
            fmt(f["fixed_cpu_seconds"]),
            f"{fmt(f['peak_rss_mb_small'], 0)} -> {fmt(f['peak_rss_mb'], 0)}",
        )
    )
    if f.get("cold_seconds_small") is not None:
        rows.append(
            (
                "  the same, first job (empty model cache)",
                "",
                fmt(f["cold_fixed_seconds"]),
                fmt(f["cold_seconds_small"]),
                "",
                "",
                "",
                "",
                "",
            )
        )
    if nb:
        rows.append(
            (
                "3 notebook recipe (spark-submit)",
                "",
                "",
                "",
                fmt(nb["seconds"]),
                fmt(nb["end_to_end_images_per_s"]),
                "",
                "",
                fmt(nb["peak_rss_mb"], 0),
            )
        )
    lines = aligned(rows) + [
        "",
        f"2 / tensorflow ceiling, marginal images/s: {fmt(r['featurize_vs_tensorflow_ceiling_marginal'], 2)} "
        f"(target >= 1.6: {fmt(t['marginal_vs_tensorflow_ceiling_ge_1_6'])})",
        f"2 / {f['runtime']} ceiling, marginal images/s: {fmt(r['featurize_vs_runtime_ceiling_marginal'], 2)} "
        f"(target >= 0.85: {fmt(t['marginal_vs_runtime_ceiling_ge_0_85'])})",
        f"2 / 3 end to end @ {n}: {fmt(r['featurize_vs_notebook_end_to_end'], 2)} (target >= 3: "
        f"{fmt(t['end_to_end_vs_notebook_ge_3'])})",
        f"featurize fixed seconds: {fmt(f['fixed_seconds'])} (target <= 12: {fmt(t['fixed_seconds_le_12'])})",
        f"CPU per image (load-independent), tensorflow ceiling / featurize.py: "
        f"{fmt(r['featurize_vs_tensorflow_ceiling_cpu_per_image'], 2)}; {f['runtime']} ceiling / featurize.py: "
        f"{fmt(r['featurize_vs_runtime_ceiling_cpu_per_image'], 2)}",
        f"featurize peak memory, {ns} -> {n} images: x{fmt(r['featurize_peak_rss_growth'], 2)} "
        f"(target <= 1.25: {fmt(t['memory_flat_within_25pct'])})",
    ]
    for runtime, c in ceilings.items():
        share = c["inside_decode_share"]
        lines.append(
            f"ceiling {runtime}: own loop (start-up excluded) @ {n}: {fmt(c['inside_loop_images_per_s'])} "
            f"images/s, decoding {fmt(share * 100 if share is not None else None)}% of it; "
            f"x{fmt(r['ceiling_vs_tensorflow_ceiling_marginal'].get(runtime), 2)} TensorFlow's marginal rate"
        )
    return lines


def pca_table(p: dict, t: dict) -> list[str]:
    return [
        f"PCA {p['rows']:,} x {p['dim']} -> k={p['k']}: pca.py {fmt(p['spark']['seconds'])} s "
        f"(--solver {p['solver']}{', native BLAS: ' + p['native_blas'] if 'native_blas' in p else ''}, "
        f"peak RSS {fmt(p['spark']['peak_rss_mb'], 0)} MB) vs numpy "
        f"{fmt(p['numpy']['seconds'])} s (fit {fmt(p['numpy']['inside']['fit_seconds'], 2)} s): "
        f"x{fmt(p['spark_vs_numpy'], 2)} (target <= 3: {fmt(t['pca_within_3x'])}); "
        f"explained variance max |diff| {p['explained_variance_max_abs_diff']:.1e}",
        f"Spark's floor under pca.py (session + its two passes into Python workers, no computing): "
        f"{fmt(p['floor']['seconds'])} s = x{fmt(p['floor_vs_numpy'], 2)} numpy; pca.py's own work above it: "
        f"{fmt(p['spark_above_floor_seconds'])} s",
    ]


def notes(result: dict) -> list[str]:
    other = max((run.get("other_load_cores", 0.0) for run in result["all_runs"]), default=0.0)
    steal = max((run.get("steal_cores", 0.0) for run in result["all_runs"]), default=0.0)
    lines = [
        f"\nother processes' CPU during the runs: up to {other:.2f} cores, stolen by the hypervisor: "
        f"up to {steal:.2f} cores (both 0 on a quiet machine; per run in all_runs[])"
    ]
    m, p = result["machine"], result.get("pca")
    if m.get("tensorflow_bytecode_cached") is False:
        lines.append(
            "note: TensorFlow has no compiled bytecode in this environment: every process that "
            "imports it compiles it again (~5 s). Install with `uv pip install --compile-bytecode` "
            "or run `python -m compileall` on site-packages."
        )
    if "SharedArchiveFile" not in (m.get("spark_submit_opts") or ""):
        lines.append(
            "note: Spark's JVMs started without a class-data-sharing archive (about 3 s more per "
            "job): `make spark-cds` builds it."
        )
    if p and p.get("native_blas", "active") != "active":  # measured with --pca-solver spark-ml only
        lines.append("note: Spark ML ran without a native BLAS (benchmarks/native_blas.sh installs OpenBLAS).")
    return lines


def table(result: dict) -> str:
    lines = featurize_table(result) if result.get("featurize") else []
    if result.get("pca"):
        lines += ([""] if lines else []) + pca_table(result["pca"], result["targets"])
    return "\n".join(lines + notes(result))


def summarise_step(runs: dict[str, list[dict]], sizes: dict[str, int], step: str) -> dict:
    best = {key: min(runs[key], key=lambda rec: rec["seconds"]) for key in sizes}
    model = two_size_model(sizes["small"], best["small"]["seconds"], sizes["large"], best["large"]["seconds"])
    model["peak_rss_mb_small"] = max(rec["peak_rss_mb"] for rec in runs["small"])
    model["peak_rss_mb"] = max(rec["peak_rss_mb"] for rec in runs["large"])
    model["cpu_seconds_small"] = best["small"]["cpu_seconds"]
    model["cpu_seconds"] = best["large"]["cpu_seconds"]
    model["runs_small"] = [rec["seconds"] for rec in runs["small"]]
    model["runs"] = [rec["seconds"] for rec in runs["large"]]
    model["cpu_runs_small"] = [rec["cpu_seconds"] for rec in runs["small"]]
    model["cpu_runs"] = [rec["cpu_seconds"] for rec in runs["large"]]
    model.update(cpu_model(sizes["small"], model["cpu_runs_small"], sizes["large"], model["cpu_runs"]))
    if step == "ceiling":
        inside = best["large"]["inside"]
        model["runtime"] = inside["runtime"]
        model["inside_loop_images_per_s"] = inside["loop_images_per_s"]
        model["inside_decode_share"] = round(inside["decode_s"] / inside["loop_s"], 4) if inside["loop_s"] else None
        model["inside_startup_seconds"] = round(inside["import_s"] + inside["build_s"], 3)
    else:
        model["runtime"] = best["large"]["runtime"]
        model["job_reported_seconds"] = best["large"]["job_reported_seconds"]
        model["model_builds"] = best["large"]["model_builds"]
        model["workers_loaded_tensorflow"] = best["large"]["workers_loaded_tensorflow"]
        model["phases_small"] = best["small"]["phases"]
        model["phases"] = best["large"]["phases"]
        model["peak_rss_growth"] = ratio(model["peak_rss_mb"], model["peak_rss_mb_small"])
    return model


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1200, help="images of the large run (default 1200)")
    parser.add_argument("--n-small", type=int, help="images of the small run (default n/4)")
    parser.add_argument("--image-size", type=int, default=224, help="model input size (default 224)")
    parser.add_argument("--batch-size", type=int, default=64)
    # 3, not 2: the marginal rate is a difference of two timings, and one slow minute of a shared
    # VM moves it (benchmarks/results/README.md).
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each measured step (per size), alternated; the fastest counts (default 3)",
    )
    parser.add_argument(
        "--runtime",
        choices=list(RUNTIMES),
        default=DEFAULT_RUNTIME,
        help=f"featurize.py --runtime (default {DEFAULT_RUNTIME}, the job's default)",
    )
    parser.add_argument(
        "--ceiling-runtimes",
        default=",".join(RUNTIMES),
        help="comma-separated runtimes of the one-process ceilings (default: all); tensorflow "
        "and featurize.py's runtime are always included",
    )
    parser.add_argument("--task-cpus", type=int, help="spark.task.cpus for featurize.py (default: the job's own)")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        help="extra spark-submit --conf KEY=VALUE for every Spark run (repeatable)",
    )
    parser.add_argument("--driver-memory", default="2g", help="--driver-memory of featurize.py and the notebook")
    parser.add_argument("--pca-rows", type=int, default=100_000)
    parser.add_argument("--pca-driver-memory", default="4g")
    parser.add_argument(
        "--pca-solver",
        choices=["batched", "spark-ml"],
        default="batched",
        help="pca.py --solver (default batched, the job's default)",
    )
    parser.add_argument(
        "--model-cache",
        choices=["warm", "cold"],
        default="warm",
        help="warm (default): featurize.py runs with a filled --model-cache, as every job after a "
        "deployment's first; the filling run is reported as cold_*; cold: no cache",
    )
    parser.add_argument("--skip-featurize", action="store_true", help="no featurization runs (PCA only)")
    parser.add_argument("--skip-notebook", action="store_true")
    parser.add_argument("--skip-pca", action="store_true")
    parser.add_argument("--out", default=str(BENCH / "results"), help="folder of the JSON results")
    parser.add_argument("--work-dir", help="inputs and outputs (default: a temporary folder, removed)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per process")
    parser.add_argument(
        "--warm-memory-gib",
        type=float,
        default=3.0,
        help="GiB touched and freed before each timed run, so that no run pays for "
        "memory the VM handed back to its host (default 3; 0: off)",
    )
    parser.add_argument(
        "--spark-jobs",
        default=str(SPARK_JOBS),
        help="folder of the featurize.py (and fruits_spark) to measure, e.g. an older version",
    )
    args = parser.parse_args(argv)
    if args.n_small is None:
        args.n_small = max(1, args.n // 4)
    if not 0 < args.n_small < args.n:
        parser.error("--n-small must be positive and smaller than --n")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.pca_rows < PCA_K + 1:
        parser.error(f"--pca-rows must be more than {PCA_K}")
    wanted = [name.strip() for name in args.ceiling_runtimes.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(RUNTIMES))
    if unknown:
        parser.error(f"--ceiling-runtimes: unknown runtime(s) {', '.join(unknown)} (choose from {', '.join(RUNTIMES)})")
    args.ceiling_runtimes = [name for name in RUNTIMES if name in {*wanted, "tensorflow", args.runtime}]
    return args


def prepare_images(work: Path, args) -> dict[str, Path]:
    """The two image folders ('small': n_small images, 'large': n), generated afresh."""
    folders = {"small": work / f"images_{args.n_small}", "large": work / f"images_{args.n}"}
    for key, count in (("small", args.n_small), ("large", args.n)):
        shutil.rmtree(folders[key], ignore_errors=True)
        if generate_images(folders[key], count) != count:
            raise SystemExit(f"generated the wrong number of images in {folders[key]}")
    log(f"generated {args.n_small} and {args.n} images ({SOURCE_PX}x{SOURCE_PX} JPEG) under {work}")
    return folders


def measure_featurization(folders: dict[str, Path], work: Path, args) -> tuple[dict, list[dict]]:
    """Ceilings and featurize.py at both sizes, interleaved: ({step: summary}, every run)."""
    sizes = {"small": args.n_small, "large": args.n}
    steps = {
        f"ceiling:{runtime}": functools.partial(run_ceiling, runtime=runtime, args=args)
        for runtime in args.ceiling_runtimes
    }
    cache = None
    if args.model_cache == "warm":
        # As a deployment runs after its first job: the converted model is in the cache. The one job
        # that filled it (cold, at the small size) is measured and reported on its own.
        cache = work / "model-cache"
        shutil.rmtree(cache, ignore_errors=True)
        log(f"featurize, {args.n_small} images, cold: converts the model and fills the cache")
        cold = run_featurize(folders["small"], work / "out_cold", args, cache)
        cold.update(step="featurize_cold", n=args.n_small, repeat=0)
        log(f"  {cold['seconds']:.1f} s (model cache {cold['model_cache']})")
    steps["featurize"] = lambda images, key: run_featurize(images, work / f"out_{key}", args, cache)
    steps = {
        step: (runner if step == "featurize" else (lambda images, key, run=runner: run(images)))
        for step, runner in steps.items()
    }
    runs = {step: {"small": [], "large": []} for step in steps}
    all_runs = []
    for rep in range(args.repeat):
        for key in ("small", "large"):  # interleaved: a noisy minute hits every side alike
            for step, runner in steps.items():
                log(f"{step}, {sizes[key]} images (run {rep + 1}/{args.repeat})")
                rec = runner(folders[key], key)
                if rec["images"] != sizes[key]:
                    raise SystemExit(f"{step} featurized {rec['images']} of {sizes[key]} images")
                rec.update(step=step.split(":")[0], n=sizes[key], repeat=rep)
                if step.startswith("ceiling:"):
                    rec["runtime"] = step.split(":")[1]
                runs[step][key].append(rec)
                all_runs.append(rec)
                log(
                    f"  {rec['seconds']:.1f} s, {rec['cpu_seconds']:.0f} CPU s, "
                    f"peak {rec['peak_rss_mb']:.0f} MB, other load {rec['other_load_cores']:.2f} cores"
                )
    summaries = {step: summarise_step(runs[step], sizes, step.split(":")[0]) for step in steps}
    summaries["featurize"]["model_cache"] = args.model_cache
    if cache is not None:
        all_runs.insert(0, cold)
        warm = summaries["featurize"]
        warm["cold_seconds_small"] = cold["seconds"]
        marginal = warm["marginal_images_per_s"]
        warm["cold_fixed_seconds"] = round(cold["seconds"] - args.n_small / marginal, 3) if marginal else None
        if any(rec["model_cache"] != "hit" for rec in runs["featurize"]["small"] + runs["featurize"]["large"]):
            raise SystemExit("a timed featurize run missed the model cache")
    return summaries, all_runs


def measure_notebook(folders: dict[str, Path], work: Path, args) -> tuple[dict, dict]:
    log(f"notebook recipe, {args.n} images")
    rec = run_notebook(folders["large"], work / "notebook", args)
    if rec["images"] != args.n:
        raise SystemExit(f"the notebook recipe featurized {rec['images']} of {args.n} images")
    rec.update(step="notebook", n=args.n, repeat=0)
    log(f"  {rec['seconds']:.1f} s")
    return {k: rec[k] for k in ("images", "seconds", "end_to_end_images_per_s", "peak_rss_mb", "cpu_seconds")}, rec


def ratios_of(result: dict) -> dict:
    ceilings, f, nb, p = result["ceilings"] or {}, result["featurize"], result["notebook"], result["pca"]
    tf_ceiling, own_ceiling = ceilings.get("tensorflow"), f and ceilings.get(f["runtime"])

    def marginal(summary):
        return summary and summary["marginal_images_per_s"]

    def cpu(summary):
        return summary and summary["marginal_cpu_ms_per_image"]

    return {
        "featurize_vs_tensorflow_ceiling_marginal": ratio(marginal(f), marginal(tf_ceiling)),
        "featurize_vs_runtime_ceiling_marginal": ratio(marginal(f), marginal(own_ceiling)),
        "featurize_vs_tensorflow_ceiling_end_to_end": ratio(
            f and f["end_to_end_images_per_s"], tf_ceiling and tf_ceiling["end_to_end_images_per_s"]
        ),
        "featurize_vs_notebook_end_to_end": ratio(
            f and f["end_to_end_images_per_s"], nb and nb["end_to_end_images_per_s"]
        ),
        "featurize_peak_rss_growth": f and f["peak_rss_growth"],
        "ceiling_vs_tensorflow_ceiling_marginal": {
            runtime: ratio(marginal(c), marginal(tf_ceiling)) for runtime, c in ceilings.items()
        },
        # CPU per image, TensorFlow's ceiling (or the runtime's own) over featurize.py's: > 1 is cheaper.
        "featurize_vs_tensorflow_ceiling_cpu_per_image": ratio(cpu(tf_ceiling), cpu(f)),
        "featurize_vs_runtime_ceiling_cpu_per_image": ratio(cpu(own_ceiling), cpu(f)),
        "ceiling_vs_tensorflow_ceiling_cpu_per_image": {
            runtime: ratio(cpu(tf_ceiling), cpu(c)) for runtime, c in ceilings.items()
        },
        "pca_spark_vs_numpy": p and p["spark_vs_numpy"],
    }


def targets_of(result: dict) -> dict:
    r, f = result["ratios"], result["featurize"]

    def at_least(value, bound):
        return None if value is None else value >= bound

    def at_most(value, bound):
        return None if value is None else value <= bound

    return {
        "marginal_vs_tensorflow_ceiling_ge_1_6": at_least(r["featurize_vs_tensorflow_ceiling_marginal"], 1.6),
        "marginal_vs_runtime_ceiling_ge_0_85": at_least(r["featurize_vs_runtime_ceiling_marginal"], 0.85),
        "end_to_end_vs_notebook_ge_3": at_least(r["featurize_vs_notebook_end_to_end"], 3.0),
        "fixed_seconds_le_12": at_most(f and f["fixed_seconds"], 12.0),
        "memory_flat_within_25pct": at_most(r["featurize_peak_rss_growth"], 1.25),
        "pca_within_3x": at_most(r["pca_spark_vs_numpy"], 3.0),
    }


def write_results(result: dict, out: Path, started: dt.datetime) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    stamped = out / f"{started.strftime('%Y%m%d-%H%M%S')}.json"
    stamped.write_text(payload, encoding="utf-8")
    (out / "latest.json").write_text(payload, encoding="utf-8")
    return stamped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="fruits-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now()
    result: dict = {
        "schema_version": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k != "work_dir"},
        "machine": machine_info(),
        "images": None,
        "ceilings": None,
        "featurize": None,
        "notebook": None,
        "pca": None,
    }
    all_runs: list[dict] = []
    try:
        if not args.skip_featurize:
            folders = prepare_images(work, args)
            result["images"] = {
                "n": args.n,
                "n_small": args.n_small,
                "image_size": args.image_size,
                "source_px": SOURCE_PX,
                "classes": min(CLASSES, args.n_small),
                "batch_size": args.batch_size,
                "weights": "none",
            }
            summaries, runs = measure_featurization(folders, work, args)
            all_runs += runs
            result["featurize"] = summaries.pop("featurize")
            result["ceilings"] = {step.split(":")[1]: summary for step, summary in summaries.items()}
            if not args.skip_notebook:
                result["notebook"], rec = measure_notebook(folders, work, args)
                all_runs.append(rec)
        if not args.skip_pca:
            result["pca"], numpy_runs, spark_runs, floor_runs = run_pca(work, args)
            all_runs += [dict(run, step="pca_numpy") for run in numpy_runs]
            all_runs += [dict(run, step="pca_spark") for run in spark_runs]
            all_runs += [dict(run, step="pca_floor") for run in floor_runs]
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    result["ratios"] = ratios_of(result)
    result["targets"] = targets_of(result)
    result["all_runs"] = all_runs
    result["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    print(table(result), flush=True)
    out = Path(args.out)
    stamped = write_results(result, out, started)
    print(f"\nwrote {stamped} and {out / 'latest.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
