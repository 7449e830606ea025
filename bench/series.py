"""A series of benchmark runs in one table: every figure as its median with the range.

Runs `bench/longpoll.py` (with the arguments after `--`) N times, one after the other, each
against fresh servers, and reads each run's table. In every measured cell each number is
replaced by the median of that number over the runs, with [min-max] after it; the target
column is kept, and "ok?" says yes only when the median meets the target (the same test the
single run applies, on the median). One run's failure (exit 1: a wrong or missing answer)
fails the series.

Run from the repo root: make bench BENCH_RUNS=5 [BENCH_ARGS="--vs-nchan"], or
.venv/bin/python bench/series.py --runs 5 -- --vs-nchan
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

LONGPOLL = Path(__file__).resolve().parent / "longpoll.py"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def run_once(args: list[str], i: int, runs: int) -> str:
    print(f"series: run {i + 1} of {runs}", file=sys.stderr)
    done = subprocess.run(
        [sys.executable, str(LONGPOLL), *args], capture_output=True, text=True, check=False
    )
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        print(done.stdout)
        raise SystemExit(f"series: run {i + 1} exited {done.returncode}")
    return done.stdout


def table_rows(output: str) -> list[list[str]]:
    """The cells of each row of a run's table (header and rule left out)."""
    rows = []
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("| figure "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def number(text: str) -> float:
    return float(text.replace(",", ""))


def text_of(value: float, like: str) -> str:
    """`value` written as `like` was: its decimals and thousands separators."""
    decimals = len(like.split(".", 1)[1]) if "." in like else 0
    return f"{value:,.{decimals}f}" if "," in like else f"{value:.{decimals}f}"


def combined(cells: list[str]) -> str:
    """One measured cell from the same cell of every run."""
    numbers = [NUMBER.findall(cell) for cell in cells]
    template = NUMBER.split(cells[0])
    if any(len(found) != len(numbers[0]) for found in numbers) or not numbers[0]:
        return " ~ ".join(dict.fromkeys(cells))  # not numbers alike: each different text once
    parts = [template[0]]
    for k, like in enumerate(numbers[0]):
        values = [number(found[k]) for found in numbers]
        median = text_of(statistics.median(values), like)
        low, high = text_of(min(values), like), text_of(max(values), like)
        between = " to " if low.startswith("-") or high.startswith("-") else "-"
        parts.append(median if low == high else f"{median} [{low}{between}{high}]")
        parts.append(template[k + 1])
    return "".join(parts)


def meets(measured: str, target: str) -> str:
    """Whether a median (the cell's first number) meets a target like "<= 15 ms", ">= 400"
    or "0"; "-" when there is no target to judge by."""
    found = re.match(r"(<=|>=)?\s*(-?\d[\d.,]*)", target)
    value = NUMBER.search(measured)
    if found is None or value is None:
        return "-"
    limit, median = number(found[2]), number(value[0])
    if found[1] is None:  # a bare number: exactly that
        return "yes" if median == limit else "no"
    return "yes" if (median <= limit if found[1] == "<=" else median >= limit) else "no"


def series_table(outputs: list[str]) -> str:
    runs = [table_rows(output) for output in outputs]
    figures = [row[0] for row in runs[0]]
    lines = [
        f"| figure | median [min-max] of {len(outputs)} runs | target | ok? |",
        "|---|---|---|---|",
    ]
    for i, figure in enumerate(figures):
        same = [rows[i] for rows in runs if i < len(rows) and rows[i][0] == figure]
        if len(same) != len(runs):
            lines.append(f"| {figure} | (not in every run) | | |")
            continue
        measured = combined([row[1] for row in same])
        target = same[0][2]
        if target == "all":
            ok = "yes" if all(row[3] == "yes" for row in same) else "no"
        else:
            ok = meets(measured, target)
        lines.append(f"| {figure} | {measured} | {target} | {ok} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("longpoll_args", nargs="*", help="after --: longpoll.py's arguments")
    args = parser.parse_args()
    outputs = [run_once(args.longpoll_args, i, args.runs) for i in range(args.runs)]
    machine = outputs[0].split("\n| figure", 1)[0]
    print(machine.rstrip() + "\n")
    print(series_table(outputs))
    notes = [line for line in outputs[-1].splitlines() if line.startswith(("note:", "problem"))]
    print("\n" + "\n".join(["notes of the last run:", *notes]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
