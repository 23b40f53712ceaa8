"""`python -m bench.ab --before DIR [--after DIR] [--rounds 2] --out docs/benchmarks.md`.

Compares two checkouts of cardapd on this machine: runs `make bench`'s benchmarks
(`bench.run`, `bench.load`, `bench.reads`) of each, alternately (before, after, before,
after, …) so that the machine's drift hits both alike, each checkout with its own venv
(`DIR/.venv`, as `make setup` makes it). For every median the benchmarks print it reports
the median over the rounds, before and after, and the ratio; since a shared machine's
speed wanders between runs, it also reports each read and RPC median divided by the
empty-RPC floor measured in the same run (the fair comparison). Writes the section
"Before and after" of the `--out` file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sections import write_section

BENCHES = ("bench.run", "bench.load", "bench.reads")
FLOOR = "Empty-RPC floor"
_LOAD = re.compile(r"^(rtt=\s*\d+ ms\s+\S+\s+\d+ KiB): median\s+([\d.]+) ms")


def run_tree(tree: Path, work: Path) -> dict[str, float]:
    """One round of the three benchmarks of `tree`; {measurement: median ms}."""
    out: dict[str, float] = {}
    python = tree / ".venv" / "bin" / "python"
    for bench in BENCHES:
        md = work / f"{bench}.md"
        md.write_text("# scratch\n")
        result = subprocess.run([str(python), "-m", bench, "--out", str(md)], cwd=tree,
                                capture_output=True, text=True, timeout=1800, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{bench} failed in {tree}:\n{result.stdout}\n{result.stderr}")
        out.update(parse(result.stdout, prefix=bench.removeprefix("bench.")))
    return out


def parse(text: str, prefix: str) -> dict[str, float]:
    """The medians a benchmark printed: table rows under a `p50 ms` column, load lines."""
    found: dict[str, float] = {}
    column = None
    for line in text.splitlines():
        if m := _LOAD.match(line.strip()):
            found[f"load: {' '.join(m[1].split())}"] = float(m[2])
            continue
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "p50 ms" in cells:
            column = cells.index("p50 ms")
            continue
        if column is None or column >= len(cells):
            continue
        try:
            value = float(cells[column])
        except ValueError:
            continue
        name = cells[0].split(":")[0] if cells[0].startswith(FLOOR) else cells[0]
        found[f"{prefix}: {name}"] = value
    return found


def compare(before: list[dict[str, float]], after: list[dict[str, float]]
            ) -> list[tuple[str, float, float, float | None]]:
    """(measurement, before median, after median, after/before on floor-relative values)."""
    rows = []
    for name in before[0]:
        if not all(name in r for r in before + after):
            continue
        b = statistics.median(r[name] for r in before)
        a = statistics.median(r[name] for r in after)
        prefix = name.split(":", 1)[0]
        floor = f"{prefix}: {FLOOR}"
        relative = None
        if not name.startswith("load") and floor in before[0] and name != floor:
            rb = statistics.median(r[name] / r[floor] for r in before)
            ra = statistics.median(r[name] / r[floor] for r in after)
            relative = ra / rb
        rows.append((name, b, a, relative))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("--before", type=Path, required=True, help="checkout to compare against")
    p.add_argument("--after", type=Path, default=Path.cwd(), help="default: this checkout")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--label", default="", help="what changed between the two (for the text)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    started = time.monotonic()
    before: list[dict[str, float]] = []
    after: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="cardapd-ab-") as tmp:
        for i in range(args.rounds):
            for tree, into in ((args.before, before), (args.after, after)):
                print(f"round {i + 1}: {tree}", flush=True)
                into.append(run_tree(tree.resolve(), Path(tmp)))
    rows = compare(before, after)

    def commit(tree: Path) -> str:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree,
                              capture_output=True, text=True, check=False).stdout.strip()

    lines = ["## Before and after", "",
             f"Run {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}, "
             f"{time.monotonic() - started:.0f} s, {args.rounds} rounds alternating; command: "
             f"`python -m bench.ab --before <checkout of {commit(args.before)}> --rounds "
             f"{args.rounds} --out docs/benchmarks.md` in the checkout of "
             f"{commit(args.after)}. {args.label}",
             "",
             "| Measurement (median of medians) | before ms | after ms | after / before | "
             "after / before, relative to the same run's floor |",
             "|---|---:|---:|---:|---:|"]
    for name, b, a, rel in rows:
        lines.append(f"| {name} | {b:.3f} | {a:.3f} | {a / b:.2f}× | "
                     f"{'' if rel is None else f'{rel:.2f}×'} |")
    text = "\n".join(lines)
    print(text)
    write_section(args.out, "bench.ab", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
