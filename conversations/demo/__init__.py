"""Moving demonstrations of the exercises: the program file's key poses drawn as a looping GIF.

A figure of rounded, thick limbs (the working leg in its own colour) moves between the key poses
with ease in and out, holds where the dose holds (a countdown shows the seconds), and the props
are drawn. Where a side view cannot show what matters (the foot turned out, knees over toes,
the ball squeeze, the knee opening) a small second view is drawn in the corner.

Each GIF is drawn once and kept on disk under a hash of everything it shows, so a press of
"Show me how" costs a file read. Its words are in the reader's language (the current one when
it is drawn), so each language has its own file. Drawn with matplotlib's Agg canvas (no pyplot,
no display); only the moving artists are redrawn per frame (blitting), Pillow writes the GIF."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from conversations import i18n
from conversations.demo.figure import FPS, RGB, frames, place
from conversations.program.data import Dose, Exercise, Program

__all__ = ["FPS", "MAX_BYTES", "RGB", "Clip", "DemoCache", "cache_key", "frames",
           "render"]

RENDERER_VERSION = "1"  # part of the cache key: bump when the drawing changes
MAX_BYTES = 1 << 20


# --- the product: a GIF, its frames' marks for tests, and the disk cache ----------------------
@dataclass(frozen=True)
class Clip:
    gif: bytes
    frames: int
    # Per frame, where the working knee and each prop are drawn (pixels): for tests.
    marks: list[dict[str, tuple[int, int]]]


Notes = dict[str, dict[str, str]] | None  # the program's translations of the dose notes


def render(exercise: Exercise, dose: Dose | None, notes: Notes = None) -> Clip:
    """The demonstration with its words in the current language."""
    # Drawn with matplotlib, imported here: the bot and its commands start without it.
    from conversations.demo.canvas import Canvas

    loop = frames(exercise.demo, dose)
    canvas = Canvas(exercise, dose, loop, notes)
    images, marks = [], []
    for frame in loop:
        images.append(canvas.draw(frame))
        b, props = place(exercise.demo, frame.pose)
        marks.append({"working_knee": canvas.pixel((b.points["w_knee"] + b.points["pelvis"])
                                                   / 2),
                      "trunk": canvas.pixel((b.points["pelvis"] + b.points["shoulder"]) / 2),
                      "floor": canvas.pixel(np.array([canvas.x0, 0.0])),
                      **{name: canvas.pixel(at) for name, at in props.items()}})
    # One palette for the whole loop (taken from a frame where the figure is furthest moved,
    # so every colour is in it), no dithering: flat colours, small files.
    palette = images[len(images) // 2].quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    quantized = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    buffer = io.BytesIO()
    quantized[0].save(buffer, "GIF", save_all=True, append_images=quantized[1:],
                      duration=[f.ms for f in loop], loop=0, optimize=False, disposal=1)
    return Clip(buffer.getvalue(), len(loop), marks)


@cache
def _catalog_digest(lang: str) -> str:
    found = i18n.CATALOGS.get(lang)
    entries = sorted(found.singular.items()) if found else []
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def cache_key(exercise: Exercise, dose: Dose | None, notes: Notes = None) -> str:
    """The drawing's key in the current language: English's as it always was; another
    language's names it and hashes the words drawn (a changed translation is drawn anew)."""
    content: dict[str, object] = {
        "v": RENDERER_VERSION, "name": exercise.name,
        "demo": exercise.demo.model_dump(mode="json"),
        "dose": dose.model_dump(mode="json") if dose else None}
    lang = i18n.current()
    if lang != i18n.SOURCE:
        content |= {"lang": lang, "words": exercise.words.name, "catalog": _catalog_digest(lang),
                    "dose_text": dose.describe(notes) if dose else None}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]
    return digest if lang == i18n.SOURCE else f"{lang}-{digest}"


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(root) / "kneecoach" / "demos"


class DemoCache:
    """GIFs on disk by content hash, one per language: drawn on first use, then read back."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_cache_dir()

    def path(self, exercise: Exercise, dose: Dose | None, notes: Notes = None) -> Path:
        """The file in the current language."""
        path = self.directory / f"{exercise.id}-{cache_key(exercise, dose, notes)}.gif"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            clip = render(exercise, dose, notes)
            # Written under another name, then renamed: a reader never sees half a file.
            fd, temp = tempfile.mkstemp(dir=self.directory, suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(clip.gif)
            os.replace(temp, path)
        return path

    def warm(self, program: Program, stop: threading.Event | None = None) -> int:
        """Draw every exercise at every level's dose in every language we speak that is not on
        disk yet; stops early when `stop` is set. Returns how many it drew."""
        drawn = 0
        for lang in i18n.LANGUAGES:
            with i18n.speaking(lang):
                for exercise in program.exercises:
                    if exercise.media is not None:
                        continue
                    doses = {cache_key(exercise, level.doses.get(exercise.id), program.notes):
                             level.doses.get(exercise.id) for level in program.levels}
                    for key, dose in doses.items():
                        if stop is not None and stop.is_set():
                            return drawn
                        if not (self.directory / f"{exercise.id}-{key}.gif").exists():
                            self.path(exercise, dose, program.notes)
                            drawn += 1
        return drawn
