"""The one table ``make bench`` prints at the end.

Each bench prints its own tables and, when ``SEG_BENCH_SUMMARY`` names a file, appends
its headline figures to it (one JSON object per line: bench, figure, value as
"median (min-max)", the ratio to nginx from the same run when there is one, and the
command that reproduces it). ``run_all.sh`` sets the variable, runs every bench, then
``python bench/_summary.py FILE`` prints the rows as one table.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def record(bench: str, figure: str, value: str, *, vs_nginx: str = "", command: str = "") -> None:
    target = os.environ.get("SEG_BENCH_SUMMARY")
    if not target:
        return
    row = {"bench": bench, "figure": figure, "value": value, "vs_nginx": vs_nginx}
    row["command"] = command
    with Path(target).open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        print("(no bench recorded a figure)")
        return
    widths = {
        key: max(len(title), *(len(r.get(key, "")) for r in rows))
        for key, title in (("bench", "bench"), ("figure", "figure"), ("value", "value"))
    }
    widths["vs_nginx"] = max(8, *(len(r.get("vs_nginx", "")) for r in rows))
    head = (
        f"{'bench':{widths['bench']}}  {'figure':{widths['figure']}}  "
        f"{'value':{widths['value']}}  {'vs nginx':{widths['vs_nginx']}}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['bench']:{widths['bench']}}  {r['figure']:{widths['figure']}}  "
            f"{r['value']:{widths['value']}}  {r.get('vs_nginx', ''):{widths['vs_nginx']}}"
        )
    print("\nreproduce:")
    seen: set[str] = set()
    for r in rows:
        if r.get("command") and r["command"] not in seen:
            seen.add(r["command"])
            print(f"  {r['command']}")


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
