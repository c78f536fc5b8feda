#!/usr/bin/env python3
"""Where the memory was at a process's peak, from a memray capture (hack/bench --memray PATH).

Prints the live bytes at the high-water mark grouped two ways: by the component responsible (the
innermost frame of a stack that is not in the standard library: kopf, aiohttp, the operator, ...)
and by the innermost frame itself. Run it with the repo's venv, where memray is installed:

    .venv/bin/python hack/memory_peak.py bench.memray
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from collections import Counter
from pathlib import Path

from memray import FileReader

STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())


def component(filename: str) -> str:
    """The package a frame's file belongs to: the first path part after site-packages, or the
    operator's source root; "python" for the standard library."""
    path = Path(filename)
    parts = path.parts
    for marker in ("site-packages", "operator"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            if rest:
                return rest[0].removesuffix(".py")
    return "python" if str(path.resolve()).startswith(STDLIB) else path.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", type=Path, help="a memray capture file")
    parser.add_argument("--top", type=int, default=15, help="rows per table")
    args = parser.parse_args()
    reader = FileReader(args.capture)
    by_component: Counter[str] = Counter()
    by_frame: Counter[str] = Counter()
    total = 0
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        total += record.size
        stack = record.stack_trace(max_stacks=64)
        owner = next((f for f in stack if component(f[1]) != "python"), stack[0] if stack else None)
        by_component[component(owner[1]) if owner else "?"] += record.size
        if stack:
            function, filename, line = stack[0]
            by_frame[f"{component(filename)}: {Path(filename).name}:{line} {function}"] += (
                record.size
            )
    peak = reader.metadata.peak_memory
    print(f"peak heap {peak / 2**20:.1f} MiB; live at the peak, traced: {total / 2**20:.1f} MiB")
    for title, table in (("by component", by_component), ("by innermost frame", by_frame)):
        print(f"\n{title}:")
        for name, size in table.most_common(args.top):
            print(f"  {size / 2**20:8.1f} MiB  {size / max(total, 1):6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
