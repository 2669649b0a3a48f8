"""How long /progress takes to draw its chart: 8 weeks and a year of daily data.

    python bench/chart.py [--repeat 5]

Prints the median drawing time and the PNG's size for each (matplotlib, Agg backend).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from random import Random

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conversations.chart import DaySession, Progress, render


def history(days: int, seed: int = 3) -> Progress:
    """A patient who mostly keeps at it, with pain drifting down and a level change a month."""
    chance = Random(seed)
    start = date(2026, 1, 1)
    sessions, pains = [], []
    for n in range(days):
        day = start + timedelta(days=n)
        status = chance.choices(["done", "partial", "skipped", "missed"], [6, 2, 1, 1])[0]
        pain = max(0, min(10, round(5 - 3 * n / days + chance.gauss(0, 1))))
        sessions.append(DaySession(day, status, pain if status in ("done", "partial") else None))
        pains.append((day, pain))
    levels = [(start + timedelta(days=n), 1 + n // 30, 2 + n // 30) for n in range(30, days, 30)]
    kujala = [(start + timedelta(days=n), 60 + n // 10) for n in range(0, days, 28)]
    return Progress(sessions=sessions, pains=pains, levels=levels, kujala=kujala,
                    baseline_worst=6, today=start + timedelta(days=days - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    render(history(7))  # matplotlib's first figure pays for its imports and font cache
    for label, days in (("8 weeks", 56), ("1 year", 365)):
        data = history(days)
        times, png = [], b""
        for _ in range(args.repeat):
            started = time.perf_counter()
            png = render(data)
            times.append(time.perf_counter() - started)
        print(f"{label:8} {days:4} days: median {statistics.median(times) * 1000:6.0f} ms, "
              f"PNG {len(png) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
