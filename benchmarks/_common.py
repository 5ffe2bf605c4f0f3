"""Helpers shared by the benchmark scripts: memory readings, BLAS description, the table."""

import ctypes
import gc
import queue as queue_lib
import re
import time
import tracemalloc
from pathlib import Path

from threadpoolctl import threadpool_info

MB = 1e6


def _proc_status_kb(field):
    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.M).group(1))


def _malloc_trim():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _fmt_mb(nbytes):
    return "-" if nbytes is None else f"{nbytes / MB:.1f}"


#: The columns of the benchmark tables (name, alignment).
COLUMNS = [
    ("case", "<"),
    ("method", "<"),
    ("best s", ">"),
    ("median s", ">"),
    ("traced MB", ">"),
    ("RSS MB", ">"),
    ("X MB", ">"),
    ("log-likelihood", ">"),
    ("check: measured (target)", "<"),
    ("result", "<"),
]


def print_table(rows, COLUMNS=COLUMNS):
    cells = [[name for name, _ in COLUMNS]] + [
        [str(r.get(n, "")) for n, _ in COLUMNS] for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]

    def line(values):
        parts = [
            f"{v:{align}{w}}" for v, (_, align), w in zip(values, COLUMNS, widths, strict=True)
        ]
        return " | ".join(parts).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    print(line(cells[0]))
    print(rule)
    previous = None
    for r, c in zip(rows, cells[1:], strict=True):
        if previous is not None and r["case"] and r["case"] != previous:
            print(rule)
        previous = r["case"] or previous
        print(line(c))


def blas_summary():
    libs = [
        f"{d['internal_api']} {Path(d['filepath']).name} x{d['num_threads']} threads"
        for d in threadpool_info()
    ]
    return "; ".join(libs) or "unknown"


def wait_for_child(proc, queue, timeout):
    """The result a started child process puts on ``queue``, or why there is none.

    The child is stopped once ``timeout`` seconds have passed (statsmodels fits can
    run for many minutes); the returned dict then says so in ``status``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            out = queue.get(timeout=1.0)
            break
        except queue_lib.Empty:
            if not proc.is_alive():
                try:
                    out = queue.get(timeout=1.0)
                except queue_lib.Empty:
                    out = {"status": f"child process died (exit code {proc.exitcode})"}
                break
            if time.monotonic() > deadline:
                out = {"status": f"stopped after {timeout:.0f} s"}
                break
    proc.join(timeout=10)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    return out


def traced_peak(fn):
    """``tracemalloc`` peak of one call, above what was traced at its start, in bytes."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


def rss_peak(fn):
    """Growth of the peak resident set size during one call, in bytes (None off Linux).

    Returns ``(bytes, result of fn())``.
    """
    gc.collect()
    _malloc_trim()  # hand freed heap memory back, so that reusing it shows in the RSS
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current VmRSS
        base = _proc_status_kb("VmRSS")
    except (OSError, AttributeError):
        return None, fn()
    out = fn()
    return (_proc_status_kb("VmHWM") - base) * 1024, out


def sklmm_revision():
    """``git describe`` of the sklmm that is imported (``unknown`` outside a checkout)."""
    import subprocess

    import sklmm

    root = Path(sklmm.__file__).resolve().parent.parent
    try:
        return subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
