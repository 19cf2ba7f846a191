"""The machine a figure was taken on: every benchmark prints this line with its figures.

A timing holds only for the CPU it was measured on (its instruction set, its cache sizes) and
for how busy the machine was, so each script prints, with its results::

    machine: CPU <model> (<n> logical CPUs); recore CPU target avx2; flags avx2=yes avx512f=no;
             caches L1d 32K, L1i 32K, L2 512K, L3 32768K; load average 1.26, 1.17, 0.63
"""

from __future__ import annotations

import os
import platform

import recore


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cache_sizes() -> str:
    """Cache levels of CPU 0 as sysfs describes them, e.g. ``L1d 48K, L1i 64K, L2 2048K``."""
    root = "/sys/devices/system/cpu/cpu0/cache"

    def read(entry: str, field: str) -> str:
        with open(f"{root}/{entry}/{field}") as file:
            return file.read().strip()

    found = []
    try:
        entries = sorted(name for name in os.listdir(root) if name.startswith("index"))
        for entry in entries:
            suffix = {"Data": "d", "Instruction": "i"}.get(read(entry, "type"), "")
            found.append(f"L{read(entry, 'level')}{suffix} {read(entry, 'size')}")
    except OSError:
        pass
    return ", ".join(found) or "unknown"


def machine_context(faiss_level: str | None = None) -> dict:
    """What :func:`context_line` prints, as a dict for a benchmark's JSON output."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "recore_cpu_target": recore.cpu_target(),
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "caches": cache_sizes(),
        "faiss_simd": faiss_level,
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }


def context_line(context: dict | None = None) -> str:
    """The CPU, recore's instruction set in use, the CPU's AVX flags, its caches and the load."""
    context = context or machine_context()
    load = ", ".join(f"{value:.2f}" for value in context["load_average"])
    faiss_part = f"; faiss SIMD level {context['faiss_simd']}" if context["faiss_simd"] else ""
    return (
        f"CPU {context['cpu']} ({context['logical_cpus']} logical CPUs); recore CPU target "
        f"{context['recore_cpu_target']}{faiss_part}; flags avx2={'yes' if context['avx2'] else 'no'} "
        f"avx512f={'yes' if context['avx512f'] else 'no'}; caches {context['caches']}; load average {load}"
    )
