"""Helpers shared by the benchmark scripts: memory readings, BLAS description, the table."""

import ctypes
import re
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


def print_table(rows, COLUMNS):
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
