"""Run a command and sample the resident memory of its whole process tree (psutil).

The tree's memory is the sum of each process's PSS (proportional set size) where the OS gives
it (Linux): pages shared by several processes count once in total. Summing RSS instead counts
them once per process: a JVM that forks a short-lived helper (Hadoop's shell calls) showed up
twice, 600 MB too much for a moment, and Spark's Python workers share pages with their daemon.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Finished:
    command: list[str]
    returncode: int
    seconds: float
    peak_rss_bytes: int  # max over samples of the resident memory of the process and all descendants
    peak_processes: int  # largest number of processes seen in the tree
    cpu_seconds: float  # user + system CPU of every process seen in the tree (as last sampled)
    samples: int
    peak_breakdown: list  # [(process, resident bytes)] at the moment of the peak, largest first
    stdout: str
    stderr: str


def describe(proc: psutil.Process) -> str:
    """A short name for a process of the tree: java, pyspark.daemon, a script name, ..."""
    try:
        args = proc.cmdline()
    except psutil.Error:
        return "?"
    for marker in ("pyspark.daemon", "multiprocessing"):
        if any(marker in a for a in args):
            return marker
    program = os.path.basename(args[0]) if args else proc.name()
    scripts = [os.path.basename(a) for a in args if a.endswith(".py")]
    if program == "java":
        return f"java ({scripts[0]})" if scripts else "java"
    return scripts[0] if scripts else program


def resident_bytes(proc: psutil.Process) -> int:
    """Resident memory of one process, shared pages counted by share (PSS); RSS where no PSS."""
    try:
        return proc.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return proc.memory_info().rss


def tree_rss(root: psutil.Process, cpu: dict | None = None, parts: list | None = None) -> tuple[int, int]:
    """(resident bytes, process count) of `root` and its descendants; vanished processes count 0.

    `cpu`, if given, is updated with {(pid, create_time): user + system seconds} of each one;
    `parts`, if given, receives (process, resident bytes) of each one.
    """
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0, 0
    total, count = 0, 0
    for proc in procs:
        try:
            with proc.oneshot():
                rss = resident_bytes(proc)
                if cpu is not None:
                    times = proc.cpu_times()
                    cpu[(proc.pid, proc.create_time())] = times.user + times.system
            total += rss
            count += 1
            if parts is not None:
                parts.append((proc, rss))
        except psutil.Error:
            pass
    return total, count


def run_sampled(command: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                interval: float = 0.1, timeout: float | None = None) -> Finished:
    """Run `command` to completion, sampling the RSS of its process tree every `interval` s."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    root = psutil.Process(proc.pid)
    peak = {"rss": 0, "procs": 0, "samples": 0, "breakdown": []}
    cpu: dict = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            parts: list = []
            rss, count = tree_rss(root, cpu, parts)
            if rss > peak["rss"]:
                peak["breakdown"] = sorted(((describe(p), r) for p, r in parts), key=lambda x: -x[1])
            peak["rss"] = max(peak["rss"], rss)
            peak["procs"] = max(peak["procs"], count)
            peak["samples"] += 1
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in root.children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        proc.kill()
        stdout, stderr = proc.communicate()
        done.set()
        sampler.join()
        raise RuntimeError(f"timed out after {timeout} s: {' '.join(command)}\n{stdout[-2000:]}\n{stderr[-4000:]}")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return Finished(command, proc.returncode, seconds, peak["rss"], peak["procs"], round(sum(cpu.values()), 2),
                    peak["samples"], peak["breakdown"], stdout, stderr)
