"""How long each exercise's demonstration takes to draw, how big it is, and what a cached
"Show me how" costs.

    python bench/demos.py [--repeat 3] [--level 2] [--sheet docs/demos/contact-sheet.png]

Prints per exercise the median drawing time, frames, loop length and GIF size; then the time
to find a drawn one on disk. With --sheet it also writes a contact sheet: one still of each
exercise, at the pose furthest from its start.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from conversations import demo
from conversations.demo.canvas import WIDTH_PX
from conversations.program.data import load_program


def furthest_still(gif: bytes, exercise: demo.Exercise, dose: demo.Dose | None) -> Image.Image:
    loop = demo.frames(exercise.demo, dose)
    best = max(range(len(loop)), key=lambda n: loop[n].effort)
    image = Image.open(io.BytesIO(gif))
    image.seek(best)
    return image.convert("RGB")


def sheet(stills: list[Image.Image], path: Path, columns: int = 3, width: int = 320) -> None:
    scaled = [s.resize((width, round(width * s.height / s.width)), Image.Resampling.LANCZOS)
              for s in stills]
    rows = [scaled[n:n + columns] for n in range(0, len(scaled), columns)]
    heights = [max(s.height for s in row) for row in rows]
    out = Image.new("RGB", (columns * width + (columns + 1) * 6, sum(heights) + 6 * (len(rows)
                                                                                     + 1)),
                    "#cccccc")
    y = 6
    for row, height in zip(rows, heights, strict=True):
        for n, still in enumerate(row):
            out.paste(still, (6 + n * (width + 6), y + (height - still.height) // 2))
        y += height + 6
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--level", type=int, default=2)
    parser.add_argument("--sheet", type=Path)
    args = parser.parse_args()
    program = load_program()
    doses = program.levels[args.level - 1].doses
    demo.render(program.exercises[0], None)  # matplotlib's first figure pays for its fonts
    print(f"level {args.level}, {WIDTH_PX} px wide, {demo.FPS} frames/s while moving")
    print(f"{'exercise':<14}{'draw s':>8}{'frames':>8}{'loop s':>8}{'KB':>8}")
    stills = []
    for exercise in program.exercises:
        dose = doses.get(exercise.id)
        times, clip = [], None
        for _ in range(args.repeat):
            started = time.perf_counter()
            clip = demo.render(exercise, dose)
            times.append(time.perf_counter() - started)
        assert clip is not None
        loop = sum(f.ms for f in demo.frames(exercise.demo, dose)) / 1000
        print(f"{exercise.id:<14}{statistics.median(times):>8.2f}{clip.frames:>8}"
              f"{loop:>8.1f}{len(clip.gif) / 1024:>8.0f}")
        stills.append(furthest_still(clip.gif, exercise, dose))
    with tempfile.TemporaryDirectory() as folder:
        cache = demo.DemoCache(Path(folder))
        exercise = program.exercises[0]
        cache.path(exercise, doses.get(exercise.id))
        started = time.perf_counter()
        for _ in range(1000):
            cache.path(exercise, doses.get(exercise.id))
        print(f"a drawn one found on disk: {(time.perf_counter() - started) * 1000:.3f} µs")
    if args.sheet:
        sheet(stills, args.sheet)
        print(f"contact sheet: {args.sheet} ({args.sheet.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
