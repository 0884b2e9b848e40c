"""Run a command and sample the resident memory of its whole process tree (psutil).

The tree's memory is the sum of each process's PSS (proportional set size) where the OS gives
it (Linux): pages shared by several processes count once in total. Summing RSS instead counts
them once per process: a JVM that forks a short-lived helper (Hadoop's shell calls) shows up
twice for a moment, and Spark's Python workers share pages with their daemon
(benchmarks/results/README.md has what that did to the numbers).
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


def tree_rss(root: psutil.Process, cpu: dict | None = None) -> list[tuple[psutil.Process, int]]:
    """(process, RSS bytes) of `root` and each descendant still alive: cheap (no page-table walk).

    `cpu`, if given, is updated with {(pid, create_time): user + system seconds} of each one.
    """
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return []
    parts = []
    for proc in procs:
        try:
            with proc.oneshot():
                rss = proc.memory_info().rss
                if cpu is not None:
                    times = proc.cpu_times()
                    cpu[(proc.pid, proc.create_time())] = times.user + times.system
            parts.append((proc, rss))
        except psutil.Error:
            pass
    return parts


def tree_pss(procs: list[psutil.Process]) -> list[tuple[psutil.Process, int]]:
    """(process, `resident_bytes`) of each process still alive."""
    parts = []
    for proc in procs:
        try:
            parts.append((proc, resident_bytes(proc)))
        except psutil.Error:
            pass
    return parts


def run_sampled(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    interval: float = 0.1,
    pss_budget: float = 0.02,
    timeout: float | None = None,
) -> Finished:
    """Run `command` to completion, sampling the memory of its process tree every `interval` s.

    The peak is of PSS sums, but PSS is costly to read: the kernel walks the page tables of each
    process, holding the JVM's memory map meanwhile; read at every sample, it slowed the measured
    jobs (benchmarks/results/README.md). So each sample reads RSS (cheap), and
    PSS only when the RSS sum exceeds the peak so far (PSS <= RSS: below it, no new peak is
    possible), and then at most `pss_budget` of the time (e.g. 2%: after a read of 20 ms, none
    for the next second).
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    root = psutil.Process(proc.pid)
    peak = {"rss": 0, "procs": 0, "samples": 0, "breakdown": []}
    cpu: dict = {}
    done = threading.Event()

    def sample() -> None:
        pss_due = 0.0
        while not done.is_set():
            parts = tree_rss(root, cpu)
            peak["procs"] = max(peak["procs"], len(parts))
            now = time.perf_counter()
            if sum(rss for _, rss in parts) > peak["rss"] and now >= pss_due:
                parts = tree_pss([p for p, _ in parts])
                pss_due = now + (time.perf_counter() - now) / pss_budget
                total = sum(rss for _, rss in parts)
                if total > peak["rss"]:
                    peak["rss"] = total
                    peak["breakdown"] = sorted(((describe(p), r) for p, r in parts), key=lambda x: -x[1])
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
        raise RuntimeError(
            f"timed out after {timeout} s: {' '.join(command)}\n{stdout[-2000:]}\n{stderr[-4000:]}"
        ) from None
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return Finished(
        command,
        proc.returncode,
        seconds,
        peak["rss"],
        peak["procs"],
        round(sum(cpu.values()), 2),
        peak["samples"],
        peak["breakdown"],
        stdout,
        stderr,
    )
