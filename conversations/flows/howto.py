"""Showing how an exercise is done: the "Show me how" buttons of the day's session and /how.

Each sends the exercise's moving demonstration (or the clinic's own picture or clip) with a
caption of its name, today's dose and the how-to text, through the reply path like any other
message (and the outbox when the platform is busy)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection

from conversations import i18n
from conversations.context import Ctx
from conversations.demo import DemoCache, cache_key
from conversations.i18n import _
from conversations.messages import Button, ButtonToken, Media
from conversations.numbers import whole
from conversations.program.data import Dose, Exercise, Program

STEP = "how"  # the button token's step; its ref is the level the dose is taken from
ECHO_CHARS = 40  # at most this much of what was typed is quoted back
CAPTION_CHARS = 1024  # Telegram's caption limit


def short(exercise: Exercise) -> str:
    if i18n.current() == i18n.PSEUDO:  # bracketed whole, as every pseudo-language word
        return i18n.pseudo(exercise.name.split(" (")[0])
    return exercise.words.name.split(" (")[0]


def buttons(program: Program, level: int | None, exercises: list[Exercise] | None = None,
            off: Collection[str] = ()) -> tuple[tuple[Button, ...], ...]:
    """One "Show me how" button per exercise (of the level but those switched `off`, or
    those given), one per row."""
    if exercises is None:
        doses = program.levels[level - 1].doses if level else {}
        exercises = [e for e in program.exercises if e.id in doses and e.id not in off]
    return tuple((Button(label=_("Show me how: {exercise}", exercise=short(e)),
                         token=ButtonToken(step=STEP, ref=level or 0, value=e.id).encode()),)
                 for e in exercises)


def _dose(program: Program, exercise: Exercise, level: int | None) -> Dose | None:
    if level is None or not 1 <= level <= program.top_level:
        return None
    return program.levels[level - 1].doses.get(exercise.id)


def media_for(exercise: Exercise, dose: Dose | None, cache: DemoCache,
              notes: dict[str, dict[str, str]] | None = None) -> Media:
    """The clinic's own file when it gave one, else the drawing in the current language (drawn
    now if not on disk)."""
    if exercise.media is not None and exercise.media_kind is not None:
        stat = exercise.media.stat()
        key = hashlib.sha256(f"{exercise.media}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return Media(kind=exercise.media_kind, path=str(exercise.media),
                     key=key.hexdigest()[:32])
    return Media(kind="animation", path=str(cache.path(exercise, dose, notes)),
                 key=cache_key(exercise, dose, notes))


async def send(ctx: Ctx, exercise: Exercise, level: int | None) -> None:
    dose = _dose(ctx.program, exercise, level)
    # Drawing takes a fraction of a second the first time: off the event loop (the thread
    # runs in a copy of this context, so in the reader's language).
    media = await asyncio.to_thread(media_for, exercise, dose, ctx.demos, ctx.program.notes)
    words = exercise.words
    lines = [words.name + (f": {dose.describe(ctx.program.notes)}" if dose else ""), words.how]
    if exercise.optional:
        lines.append(_("Optional hip work."))
    ctx.say("\n".join(lines)[:CAPTION_CHARS], media=media)


async def _level(ctx: Ctx) -> int | None:
    program = await ctx.repo.program(ctx.user.id)
    return program.level if program is not None else None


async def press(ctx: Ctx, token: ButtonToken) -> None:
    """A "Show me how" button: always valid (it only shows), whatever the conversation."""
    exercise = ctx.program.exercise(token.value)
    if exercise is None:  # a button from an older program file
        ctx.say(_("That exercise is no longer in the program. /how lists the current ones."))
        return
    level = token.ref if 1 <= token.ref <= ctx.program.top_level else await _level(ctx)
    await send(ctx, exercise, level)


def _find(program: Program, typed: str) -> list[Exercise]:
    wanted = typed.strip().lower()
    if (number := whole(wanted, 1, len(program.exercises))) is not None:
        return [program.exercises[number - 1]]
    exact = [e for e in program.exercises
             if wanted in (e.id, e.name.lower(), e.words.name.lower())]
    if exact:
        return exact
    return [e for e in program.exercises
            if wanted and (wanted in e.name.lower() or wanted in e.words.name.lower()
                           or wanted.replace(" ", "_") in e.id)]


def _listing(program: Program) -> str:
    return "\n".join(f"{n}. {e.words.name} (/how {n})"
                     for n, e in enumerate(program.exercises, 1))


async def command(ctx: Ctx) -> None:
    """/how: the list; /how N, NAME or a word of the name: that one; /how all: every one."""
    typed = " ".join(ctx.inbound.args).strip()
    level = await _level(ctx)
    program = ctx.program
    if not typed:
        ctx.say(_("Which exercise shall I show you? Press one, or send /how and its number:")
                + "\n" + _listing(program), buttons(program, level, list(program.exercises)))
        return
    if typed.lower() == "all":
        for exercise in program.exercises:
            await send(ctx, exercise, level)
        return
    found = _find(program, typed)
    if len(found) == 1:
        await send(ctx, found[0], level)
        return
    quoted = typed if len(typed) <= ECHO_CHARS else typed[:ECHO_CHARS] + "..."
    if found:
        ctx.say(_('More than one exercise matches "{typed}". Which one?', typed=quoted),
                buttons(program, level, found))
        return
    ctx.say(_('I do not know an exercise called "{typed}". Send /how alone for the list, or '
              "/how with its number, for example /how 1.", typed=quoted))
