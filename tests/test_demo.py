"""The exercises' moving demonstrations: the program's demos validate, each GIF moves, stays
small and draws the figure and props where they belong; a broken demo or clinic file is
refused at start-up naming the file, the exercise and the field; /how and the "Show me how"
buttons send them (the clinic's own file instead when it gave one)."""

from __future__ import annotations

import io
import itertools
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.channels.console import ConsoleChannel
from bot.channels.telegram import TelegramChannel
from bot.sender import OutboxSender
from conftest import CLEAN_SCREEN, Patient, enrolled, telegram_settings
from conversations import demo, i18n
from conversations.clock import ManualClock
from conversations.demo import RGB, DemoCache, cache_key, render
from conversations.demo.canvas import Canvas
from conversations.engine import Engine
from conversations.messages import Media, Outbound
from conversations.program.data import Program, ProgramError, default_program_path, load_program
from conversations.prompts import prompt_message
from storage.models import MediaUpload, Outbox
from telegram_server import TOKEN, BotApiServer, Person, Sent

SHIPPED = default_program_path().read_text()
IDS = [e.id for e in load_program().exercises]


def _frames(gif: bytes) -> list[Image.Image]:
    image = Image.open(io.BytesIO(gif))
    out = []
    for n in range(image.n_frames):
        image.seek(n)
        out.append(image.convert("RGB"))
    return out


def _near(frame: Image.Image, at: tuple[int, int], colour: tuple[int, int, int],
          reach: int = 4, tolerance: int = 40) -> bool:
    """Some pixel within `reach` of `at` has this colour (the GIF's palette may shift it)."""
    x0, y0 = at
    for x in range(max(0, x0 - reach), min(frame.width, x0 + reach + 1)):
        for y in range(max(0, y0 - reach), min(frame.height, y0 + reach + 1)):
            pixel = frame.getpixel((x, y))
            if all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True)):
                return True
    return False


def test_every_exercise_of_the_shipped_program_has_a_demo(program: Program) -> None:
    for exercise in program.exercises:
        assert len(exercise.demo.poses) >= 2, exercise.id
        assert exercise.media is None  # the shipped program draws every one
    # What the how-to text says needs a second view has one.
    details = {e.id: set(e.demo.details) for e in program.exercises}
    assert {"foot_out"} <= details["slr"] and {"foot_out"} <= details["knee_ext"]
    assert {"foot_out", "knees_over_toes"} <= details["squat"]
    assert {"ball_squeeze", "knees_over_toes"} <= details["ball_squat"]
    assert "knee_opens" in details["clamshell"]


@pytest.mark.parametrize("exercise_id", IDS)
def test_each_gif_moves_stays_small_and_draws_figure_and_props(
        program: Program, exercise_id: str) -> None:
    exercise = program.exercise(exercise_id)
    assert exercise is not None
    dose = program.levels[1].doses.get(exercise_id)
    clip = render(exercise, dose)
    frames = _frames(clip.gif)
    assert len(frames) == clip.frames > 1
    assert len(clip.gif) < demo.MAX_BYTES
    changed = sum(ImageChops.difference(a, b).getbbox() is not None
                  for a, b in itertools.pairwise(frames))
    assert changed >= len(frames) // 3  # it moves, and not by one pixel once
    # The working leg in its own colour where the renderer put the thigh, the body where the
    # trunk is, each prop where it belongs: in nearly every frame (an arm may cross over).
    for name, colour in [("working_knee", RGB["working"]), ("trunk", RGB["body"]),
                         *[(p, RGB[p]) for p in ("ball", "foam_roller") if
                           p in exercise.demo.props]]:
        hits = sum(_near(f, marks[name], colour, reach=4 if name in ("working_knee", "trunk")
                         else 9)
                   for f, marks in zip(frames, clip.marks, strict=True))
        assert hits >= 0.8 * len(frames), (name, hits, len(frames))
    first = frames[0]
    pixels = np.asarray(first).reshape(-1, 3).astype(int)

    def area(colour: tuple[int, int, int]) -> int:
        return int((np.abs(pixels - np.array(colour)).max(axis=1) <= 12).sum())

    for prop in ("wall", "chair"):  # a solid area of it, not a blend at some edge
        assert (area(RGB[prop]) > 1500) == (prop in exercise.demo.props), prop
    if exercise.demo.view != "above":  # the floor line across the picture
        floor_y = clip.marks[0]["floor"][1]
        assert _near(first, (5, floor_y), RGB["floor"])
        assert _near(first, (first.width - 6, floor_y), RGB["floor"])


def test_a_hold_matches_the_dose_and_counts_down(program: Program) -> None:
    exercise = program.exercise("slr")
    assert exercise is not None
    short, long = program.levels[0].doses["slr"], program.levels[2].doses["slr"]
    assert (short.hold_seconds, long.hold_seconds) == (3, 5)
    for dose in (short, long):
        held = [f for f in demo.frames(exercise.demo, dose) if f.label.startswith("hold")]
        assert [f.label for f in held] == [f"hold {n} s" for n in range(dose.hold_seconds or 0,
                                                                       0, -1)]
        assert sum(f.ms for f in held) == 1000 * (dose.hold_seconds or 0)


def test_the_cache_draws_once_per_exercise_and_dose(program: Program, tmp_path: Path) -> None:
    cache = DemoCache(tmp_path)
    exercise = program.exercise("bridge")
    assert exercise is not None
    first = cache.path(exercise, program.levels[1].doses["bridge"])
    stamp = first.stat().st_mtime_ns
    again = cache.path(exercise, program.levels[1].doses["bridge"])
    assert again == first and again.stat().st_mtime_ns == stamp
    other = cache.path(exercise, program.levels[4].doses["bridge"])  # another caption
    assert other != first and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.name, other.name])


# --- refused at start-up -----------------------------------------------------------------------
def _bad(tmp_path: Path, text: str) -> ProgramError:
    path = tmp_path / "program.toml"
    path.write_text(text)
    with pytest.raises(ProgramError) as error:
        load_program(path)
    return error.value


SLR_LIFT = "{ name = \"lift, leg straight\", trunk = -90, working = { hip = 45"


@pytest.mark.parametrize("old,new,field,reason", [
    (SLR_LIFT, SLR_LIFT.replace("hip = 45", "hip = 175"), "demo.poses.1.working.hip",
     "less than or equal to 140"),
    ('props = ["floor", "wall", "ball"]', 'props = ["floor", "wall", "trampoline"]',
     "demo.props.2", "'floor', 'foam_roller', 'ball', 'wall' or 'chair'"),
    ('details = ["knees_over_toes", "ball_squeeze"]\nanchor = "wall"',
     'details = ["knees_over_toes", "ball_squeeze"]\nanchor = "roller"', "demo",
     "anchor roller needs the foam_roller prop"),
    ("knee = 45, ankle = 5 }, other = { hip = 40, knee = 45, ankle = 5 }, move = 2.5",
     "knee = 45, ankle = 5 }, other = { hip = 40, knee = -10, ankle = 5 }, move = 2.5",
     "demo.poses.1.other.knee", "greater than or equal to 0"),
])
def test_a_broken_demo_fails_start_up_naming_file_exercise_and_field(
        tmp_path: Path, old: str, new: str, field: str, reason: str) -> None:
    assert old in SHIPPED
    message = str(_bad(tmp_path, SHIPPED.replace(old, new, 1)))
    assert message.startswith(str(tmp_path / "program.toml"))
    assert field in message and reason in message, message
    exercise = "slr" if "leg straight" in old else "ball_squat"
    assert f"(exercise '{exercise}')" in message, message


def test_a_demo_with_one_pose_is_refused(tmp_path: Path) -> None:
    start = SHIPPED.index("[exercises.demo]", SHIPPED.index('id = "bridge"'))
    end = SHIPPED.index("]\n", SHIPPED.index("poses = [", start)) + 2
    one = ('[exercises.demo]\nposes = [{ name = "only", trunk = -90, working = { hip = 0, '
           'knee = 0 }, other = { hip = 0, knee = 0 } }]\n')
    message = str(_bad(tmp_path, SHIPPED[:start] + one + SHIPPED[end:]))
    assert "demo.poses" in message and "at least 2" in message and "'bridge'" in message


def _with_media(tmp_path: Path, name: str, content: bytes | None) -> str:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    return SHIPPED.replace('id = "slr"', f'id = "slr"\nmedia = "{name}"', 1)


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@pytest.mark.parametrize("name,content,reason", [
    ("missing.gif", None, "missing.gif: cannot read"),
    ("notes.txt", b"hello", "use a JPEG, PNG, GIF or MP4 file"),
    ("fake.png", b"GIF89a not a png", "the content is not a png file"),
    ("empty.mp4", b"", "0 bytes"),
    ("clip.mp4", b"\0\0\0\x18notftyp", "the content is not a mp4 file"),
])
def test_a_bad_clinic_media_file_fails_start_up(tmp_path: Path, name: str,
                                               content: bytes | None, reason: str) -> None:
    message = str(_bad(tmp_path, _with_media(tmp_path, name, content)))
    assert "media" in message and "(exercise 'slr')" in message and reason in message, message


def test_a_clinic_media_file_is_taken_with_its_kind(tmp_path: Path) -> None:
    path = tmp_path / "program.toml"
    path.write_text(_with_media(tmp_path, "slr.png", PNG))
    exercise = load_program(path).exercise("slr")
    assert exercise is not None
    assert exercise.media == (tmp_path / "slr.png").resolve() and exercise.media_kind == "photo"


# --- in the chat (the engine, through the terminal channel's neutral messages) ---------------
async def test_today_offers_show_me_how_per_exercise_and_a_press_sends_it(
        engine: Engine) -> None:
    patient = await enrolled(engine, "how-1")
    await patient.send("/today")
    (session,) = [r for r in patient.replies if r.text.startswith("Today's session")]
    labels = [b.label for row in session.buttons for b in row]
    assert len(labels) == 9 and labels[3] == "Show me how: Straight leg raise with the foot " \
        "turned out"
    await patient.press_token(session.buttons[3][0].token)
    (shown,) = patient.replies
    assert shown.media is not None and shown.media.kind == "animation"
    with open(shown.media.path, "rb") as gif:  # noqa: ASYNC230 - a test reading a file
        assert gif.read(6) == b"GIF89a"
    assert shown.text.startswith("Straight leg raise with the foot turned out: 3 x 10, 3 s hold")
    assert "turn the foot out" in shown.text
    assert not any(r.edit_message_id for r in patient.replies)  # the keyboard stays


@pytest.mark.parametrize("typed,expect", [
    ("/how", "Which exercise"),
    ("/how 4", "Straight leg raise"),
    ("/how slr", "Straight leg raise"),
    ("/how clamshell", "Clamshell"),
    ("/how bridge please", "I do not know an exercise called \"bridge please\""),
    ("/how 0", "I do not know an exercise called \"0\""),
    ("/how 99", "I do not know an exercise called \"99\""),
    ("/how 🦵🦵", "I do not know an exercise called \"🦵🦵\""),
    ("/how " + "x" * 5000, "I do not know an exercise called \"" + "x" * 40 + "...\""),
    ("/how squat", "Body-weight squat"),
    ("/how thigh", "More than one exercise matches \"thigh\""),
])
async def test_how_answers_clearly(engine: Engine, typed: str, expect: str) -> None:
    patient = await enrolled(engine, "how-2")
    await patient.send(typed)
    assert expect in patient.text, patient.text
    media = [r.media for r in patient.replies if r.media is not None]
    assert len(media) == (1 if not expect.startswith(("Which", "I do not", "More")) else 0)
    if typed in ("/how", "/how thigh"):
        assert patient.buttons and all(b.label.startswith("Show me how") for b in
                                       patient.buttons)
    assert len(patient.text) < 2000  # a huge argument is not echoed whole


async def test_how_works_before_enrolment_without_a_dose(engine: Engine) -> None:
    stranger = Patient(engine, "how-3")
    await stranger.send("/start")
    await stranger.send("/how 9")
    (shown,) = [r for r in stranger.replies if r.media is not None]
    assert shown.text.startswith("Bridge\n")  # no level yet: no dose
    assert "I agree" in [b.label for b in stranger.buttons]  # the pending question again


async def test_the_clinic_media_is_sent_instead_of_the_drawing(
        tmp_path: Path, engine: Engine) -> None:
    path = tmp_path / "program.toml"
    path.write_text(_with_media(tmp_path, "slr.png", PNG))
    engine.program = load_program(path)
    patient = await enrolled(engine, "how-4")
    await patient.send("/how slr")
    (shown,) = [r for r in patient.replies if r.media is not None]
    assert shown.media is not None and shown.media.kind == "photo"
    assert shown.media.path == str((tmp_path / "slr.png").resolve())


# --- through the Telegram test server ----------------------------------------------------------
async def _show_me_how(person: Person, label: str) -> list[Sent]:
    await person.say("/today")
    (session,) = [m for m in person.new if m.text.startswith("Today's session")]
    return await person.press(label, session)


async def test_telegram_uploads_the_animation_once_then_sends_its_file_id(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    ann = Person(telegram_api, 1401)
    await ann.say("/start")
    await ann.answer_all(*CLEAN_SCREEN)
    label = "Show me how: Straight leg raise with the foot turned out"
    (first,) = await _show_me_how(ann, label)
    (upload,) = telegram_api.called("sendAnimation")
    assert first.kind == "animation" and first.content.startswith(b"GIF89a")
    assert upload.files["animation"] == first.content and len(first.content) < demo.MAX_BYTES
    assert first.text.startswith("Straight leg raise with the foot turned out: 3 x 10")
    async with sessions() as db:
        (kept,) = (await db.scalars(select(MediaUpload))).all()
    assert kept.bot == TOKEN.split(":")[0] and kept.file_id == first.file_id

    (second,) = await _show_me_how(ann, label)
    again = telegram_api.called("sendAnimation")[-1]
    assert again.files == {} and again.params["animation"] == first.file_id
    assert second.kind == "animation" and second.file_id == first.file_id

    # Telegram forgot the file (or it was another bot's): uploaded again, the new id kept.
    telegram_api.files.clear()
    (third,) = await _show_me_how(ann, label)
    assert telegram_api.called("sendAnimation")[-1].files["animation"] == first.content
    async with sessions() as db:
        (kept,) = (await db.scalars(select(MediaUpload))).all()
    assert kept.file_id == third.file_id != first.file_id


async def test_telegram_sends_the_clinic_photo_instead_when_set(
        tmp_path: Path, telegram_api: BotApiServer, telegram_bot: TelegramChannel) -> None:
    path = tmp_path / "program.toml"
    path.write_text(_with_media(tmp_path, "slr.png", PNG))
    telegram_bot.engine.program = load_program(path)
    bob = Person(telegram_api, 1402)
    await bob.say("/start")
    await bob.answer_all(*CLEAN_SCREEN)
    (shown,) = [m for m in await bob.say("/how slr") if m.kind != "text"]
    assert shown.kind == "photo" and shown.content == PNG
    assert telegram_api.called("sendAnimation") == []
    await bob.say("/how 4")
    assert telegram_api.called("sendPhoto")[-1].params["photo"] == shown.file_id


async def test_a_demo_the_platform_refused_for_now_goes_through_the_outbox(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    cat = Person(telegram_api, 1403)
    await cat.say("/start")
    await cat.answer_all(*CLEAN_SCREEN)
    telegram_api.fail("sendAnimation", status=429, retry_after=60)  # longer than a reply waits
    assert [m for m in await cat.say("/how bridge") if m.kind == "animation"] == []
    async with sessions() as db:
        (queued,) = (await db.scalars(select(Outbox).where(Outbox.status == "pending"))).all()
    assert queued.payload["media"]["kind"] == "animation"
    sender = OutboxSender(sessions, {"telegram": TelegramChannel.deliverer(
        telegram_settings(telegram_api), sessions)}, clock, rate=28)
    clock.advance(timedelta(seconds=61))
    await sender.drain()
    (sent,) = [m for m in telegram_api.to(1403) if m.kind == "animation"]
    assert sent.text.startswith("Bridge: 3 x 10") and sent.content.startswith(b"GIF89a")
    async with sessions() as db:  # the worker kept its file_id for the next time
        assert await db.scalar(select(MediaUpload.file_id)) == sent.file_id


def test_warming_draws_what_is_missing_once_and_stops_when_told(
        program: Program, tmp_path: Path) -> None:
    bridge = program.exercise("bridge")
    small = program.model_copy(update={"exercises": [bridge]})
    cache = DemoCache(tmp_path)
    stop = threading.Event()
    stop.set()
    assert cache.warm(small, stop) == 0
    # Level 1 has no bridge (drawn without a dose); levels 2-5 have four different doses: five
    # drawings in each language we speak.
    assert cache.warm(small) == 5 * len(i18n.LANGUAGES)
    for lang in ("es", "de"):
        assert len(list(tmp_path.glob(f"bridge-{lang}-*.gif"))) == 5
    assert len(list(tmp_path.glob("bridge-*.gif"))) == 5 * len(i18n.LANGUAGES)
    assert cache.warm(small) == 0


def test_the_terminal_shows_where_the_demonstration_is(engine: Engine, tmp_path: Path
                                                       ) -> None:
    out = io.StringIO()
    console = ConsoleChannel(engine, "me", stdin=io.StringIO(), stdout=out, files_dir=tmp_path)
    console.render(Outbound(channel="console", chat_id="me", text="Bridge: 3 x 10",
                            media=Media(kind="animation", path="/cache/bridge-1.gif", key="k")))
    assert out.getvalue() == "Bridge: 3 x 10\n(see /cache/bridge-1.gif)\n"


async def test_the_daily_prompt_carries_show_me_how_too(engine: Engine) -> None:
    patient = await enrolled(engine, "how-5")
    prompt = prompt_message("console", "how-5", 1, 1, engine.program)
    assert [b.label for b in prompt.buttons[0]] == ["Done", "Partly", "Skipped", "In 1 hour"]
    shows = [row[0] for row in prompt.buttons[1:]]
    assert [b.label for b in shows] == [  # level 1: no body-weight squat, no bridge
        "Show me how: Foam-roll the outer thigh", "Show me how: Stretch the outer thigh",
        "Show me how: Wall squat squeezing a ball between the knees",
        "Show me how: Straight leg raise with the foot turned out",
        "Show me how: Knee extension with the foot turned out",
        "Show me how: Side-lying hip abduction", "Show me how: Clamshell"]
    await patient.press_token(shows[2].token)  # valid whatever the conversation is doing
    (shown,) = patient.replies
    assert shown.media is not None and shown.text.startswith(
        "Wall squat squeezing a ball between the knees: 2 x 8, 3 s hold, to 30 deg")


async def test_telegram_sends_a_clinic_clip_as_a_video_then_by_its_file_id(
        tmp_path: Path, telegram_api: BotApiServer, telegram_bot: TelegramChannel) -> None:
    clip = b"\0\0\0\x18ftypmp42" + b"\0" * 64
    path = tmp_path / "program.toml"
    path.write_text(SHIPPED.replace('id = "bridge"', 'id = "bridge"\nmedia = "bridge.mp4"', 1))
    (tmp_path / "bridge.mp4").write_bytes(clip)
    telegram_bot.engine.program = load_program(path)
    dee = Person(telegram_api, 1404)
    await dee.say("/start")
    await dee.answer_all(*CLEAN_SCREEN)
    (shown,) = [m for m in await dee.say("/how bridge") if m.kind != "text"]
    assert shown.kind == "video" and shown.content == clip
    (again,) = [m for m in await dee.say("/how 9") if m.kind != "text"]
    assert again.file_id == shown.file_id and again.content == b""
    assert [bool(c.files) for c in telegram_api.called("sendVideo")] == [True, False]


# --- in the reader's language ------------------------------------------------------------------
def _canvas(program: Program, exercise_id: str, level: int, lang: str) -> Canvas:
    exercise = program.exercise(exercise_id)
    assert exercise is not None
    dose = program.levels[level - 1].doses.get(exercise_id)
    with i18n.speaking(lang):
        return Canvas(exercise, dose, demo.frames(exercise.demo, dose), program.notes)


@pytest.mark.parametrize(("lang", "title", "dose", "view", "detail", "phases"), [
    ("es", "Sentadilla en la pared apretando una", "2 x 8, 3 s de mantenimiento, hasta 30°",
     "vista lateral", "de frente", {"deslice abajo, apriete", "mantenga 3 s"}),
    ("de", "Wandkniebeuge mit einem Ball", "2 x 8, 3 s halten, bis 30°",
     "Seitenansicht", "von vorn", {"abgleiten, drücken", "halten 3 s"}),
])
def test_the_words_drawn_come_from_the_catalog(
        program: Program, lang: str, title: str, dose: str, view: str, detail: str,
        phases: set[str]) -> None:
    canvas = _canvas(program, "ball_squat", 1, lang)
    assert canvas.title[0] == title and " ".join(canvas.dose_lines) == dose
    assert canvas.labels == [view, detail]
    with i18n.speaking(lang):
        labels = {f.label for f in demo.frames(canvas.demo,
                                               program.levels[0].doses["ball_squat"])}
        assert phases <= labels and labels <= {i18n.gettext(p) for p in demo.figure.PHASES} | {
            i18n.gettext("hold {seconds} s", seconds=n) for n in range(1, 61)}


def test_the_clam_and_foot_views_are_translated_too(program: Program) -> None:
    clam = _canvas(program, "clamshell", 2, "de")
    assert clam.labels == ["von oben gesehen", "Füße zusammen", "von den Füßen aus"]
    slr = _canvas(program, "slr", 1, "es")
    assert "el pie desde arriba" in slr.labels
    exercise = program.exercise("slr")
    assert exercise is not None
    with i18n.speaking("es"):  # the foot's note is written as the frames are drawn
        for frame in demo.frames(exercise.demo, program.levels[0].doses["slr"]):
            slr.draw(frame)
    assert slr.labels[:2] == ["vista lateral", "el pie desde arriba"]
    notes = slr.labels[2:]
    assert notes and all(n == "recto" or n.startswith("puntas fuera ") for n in notes), notes


def test_the_pseudo_language_caption_is_bracketed(program: Program) -> None:
    canvas = _canvas(program, "ball_squat", 1, i18n.PSEUDO)
    exercise = program.exercise("ball_squat")
    assert exercise is not None
    with i18n.speaking(i18n.PSEUDO):
        loop = demo.frames(exercise.demo, program.levels[0].doses["ball_squat"])
    words = [*canvas.title, *canvas.labels, *(f.label for f in loop)]
    assert canvas.title[0].startswith("[") and canvas.title[-1].endswith("]")
    assert all(w.startswith("[") and w.endswith("]") for w in words[len(canvas.title):]), words
    assert "".join(canvas.dose_lines).count("[") >= 1


def test_english_keeps_its_key_and_words(program: Program) -> None:
    roll = program.exercise("roll")
    assert roll is not None
    # The key an English drawing had before the languages: files on disk stay valid.
    assert cache_key(roll, program.levels[0].doses["roll"]) == "a051202f1c58594d4a7b7878c7248fae"
    canvas = _canvas(program, "ball_squat", 1, i18n.SOURCE)
    assert canvas.title == ["Wall squat squeezing a ball between", "the knees"]
    assert canvas.dose_lines == ["2 x 8, 3 s hold, to 30 deg"]
    assert canvas.labels == ["side view", "from the front"]


async def test_a_spanish_patient_is_shown_a_spanish_drawing(engine: Engine) -> None:
    english, spanish = Patient(engine, "how-en"), Patient(engine, "how-es")
    await english.send("/start")
    await spanish.send("/start", language="es")
    for patient in (english, spanish):
        await patient.send("/how 9")
    (shown_en,) = [r.media for r in english.replies if r.media is not None]
    (shown_es,) = [r.media for r in spanish.replies if r.media is not None]
    assert shown_en is not None and shown_es is not None
    assert shown_es.key.startswith("es-") and not shown_en.key.startswith(("es-", "de-"))
    assert Path(shown_es.path).name.startswith("bridge-es-") and shown_es.path != shown_en.path
    assert shown_es.key != shown_en.key
