"""``python -m benchmarks [--json] [--quick] [NAME...]``: run the performance targets.

Every ``benchmarks/bench_*.py`` module exposes ``run(quick: bool) -> list[dict]``; each
dict is one result ``{"name", "value", "unit", "baseline"?, "ratio"?, "target"?, "met"?,
"note"?}`` (docs/benchmarks.md). Baselines are measured in the same run. Nothing here asserts:
the numbers are printed for people (and CI logs) to read.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:,.3f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    return "" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help="run only these modules (e.g. ftms sim)")
    parser.add_argument("--json", action="store_true", help="one JSON object per result")
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    args = parser.parse_args(argv)
    wanted = {f"bench_{n.removeprefix('bench_')}" for n in args.names}
    results: list[dict[str, Any]] = []
    failed = False
    for name in _modules():
        if wanted and name not in wanted:
            continue
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            for result in module.run(quick=args.quick):
                result.setdefault("module", name)
                results.append(result)
                if args.json:
                    print(json.dumps(result), flush=True)
        except Exception:
            failed = True
            print(f"benchmarks: {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
        if not args.json:
            print(f"# {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if not args.json:
        cols = ["name", "value", "unit", "baseline", "ratio", "target", "met"]
        rows = [[_fmt(r.get(c)) for c in cols] for r in results]
        widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c)
                  for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for row in rows:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        for r in results:
            if r.get("note"):
                print(f"note: {r['name']}: {r['note']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
