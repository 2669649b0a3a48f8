"""Every patient in their own language: the catalogs are complete and match the code, the
language is taken from the platform at first contact or /language, and switching keeps the
question. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import string
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from clinic import ADMIN, coach_named, patient_of
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from tick_and_send import FIRST_PROMPT, scheduler

from bot.channels.slack import SlackChannel
from bot.channels.telegram import TelegramChannel
from bot.scheduler import Scheduler
from bot.sender import OutboxSender
from bot.settings import Settings
from conftest import CLEAN_SCREEN, KUJALA_AT, Patient, enrolled
from conversations import i18n
from conversations.clock import ManualClock
from conversations.commands import MENU
from conversations.engine import Engine
from conversations.i18n import N_, _
from conversations.localtime import describe_days, parse_days, parse_time
from conversations.messages import ButtonToken
from conversations.program.data import (
    TRANSLATED as PROGRAM_LANGUAGES,
)
from conversations.program.data import (
    Program,
    ProgramError,
    default_program_path,
    load_program,
)
from conversations.said import shown, wording
from fake_api import free_port
from slack_server import BOT_TOKEN, SIGNING_SECRET, SlackPerson, SlackServer
from storage.models import ConversationState, Hold, Outbox, ProgramState, User
from telegram_server import BotApiServer, Person

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "conversations" / "locale"
TRANSLATED = [lang for lang in i18n.LANGUAGES if lang != i18n.SOURCE]


def _ids(path: Path) -> dict[str | tuple[str, ...], str | tuple[str, ...]]:
    with path.open("rb") as f:
        return {m.id: m.string for m in read_po(f) if m.id}


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_the_template_holds_exactly_the_strings_in_the_code() -> None:
    """The catalogs cannot drift from the code: a string added, changed or removed without
    `pybabel extract` and `pybabel update` (README) fails here, and so in CI."""
    code: set[str | tuple[str, ...]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), [("conversations/**.py", "python"), ("bot/cli.py", "python")]):
        code.add(message if isinstance(message, str) else tuple(message))
    template = set(_ids(LOCALE / "kneecoach.pot"))
    assert code - template == set(), "in the code, not in kneecoach.pot: run pybabel extract"
    assert template - code == set(), "in kneecoach.pot, no longer in the code"
    for lang in TRANSLATED:
        ids = set(_ids(LOCALE / lang / "LC_MESSAGES" / "kneecoach.po"))
        assert ids == template, f"{lang}: run pybabel update"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_message_is_translated_with_the_same_placeholders(lang: str) -> None:
    for msgid, msgstr in _ids(LOCALE / lang / "LC_MESSAGES" / "kneecoach.po").items():
        ids = (msgid,) if isinstance(msgid, str) else msgid
        forms = (msgstr,) if isinstance(msgstr, str) else msgstr
        assert all(forms), f"{lang}: no translation of {msgid!r}"
        for form in forms:
            assert _placeholders(form) == _placeholders(ids[-1]), (lang, msgid, form)


def test_the_catalogs_are_read_as_the_po_files_say() -> None:
    with i18n.speaking("es"):
        assert _("Which knee is painful?") == "¿Qué rodilla le duele?"
        assert _("Reminder time: {time}.", time="19:00") == "Hora del recordatorio: 19:00."
    with i18n.speaking("de"):
        assert _("Which knee is painful?") == "Welches Knie schmerzt?"
    with i18n.speaking("xx"):  # unknown: English
        assert _("Which knee is painful?") == "Which knee is painful?"
    assert i18n.current() == "en"


def test_pseudo_language_brackets_and_accents_but_keeps_placeholders() -> None:
    with i18n.speaking(i18n.PSEUDO):
        assert _("Reminder time: {time}.", time="07:00") == "[Rémíñdér tímé: 07:00.]"


@pytest.mark.parametrize(("code", "expected"), [
    ("es", "es"), ("es-ES", "es"), ("es_419", "es"), ("de-AT", "de"), ("DE", "de"),
    ("en-GB", "en"), ("pt-br", "en"), ("", "en"), (None, "en"), ("🦵", "en"),
    ("x" * 35, "en"), ("e", "en")])
def test_a_platform_code_becomes_one_of_our_languages(code: str | None, expected: str) -> None:
    assert i18n.pick(code) == expected


@pytest.mark.parametrize(("typed", "days"), [
    ("lun-vie", "12345"), ("Mo-Fr", "12345"), ("cada día", "1234567"),
    ("täglich", "1234567"), ("lunes a viernes", "12345"), ("mo bis fr", "12345"),
    ("lun, mié y vie", "135"), ("Mo, Mi und Fr", "135"), ("fines de semana", "67"),
    ("am Wochenende", "67"), ("werktags", "12345"), ("vie-lun", "1567"),
    ("lunático", None), ("montagmorgen", None)])
def test_days_in_spanish_and_german(typed: str, days: str | None) -> None:
    assert parse_days(typed.lower()) == days


@pytest.mark.parametrize(("typed", "hhmm"), [
    ("7 de la tarde", "19:00"), ("19 Uhr", "19:00"), ("7 Uhr abends", "19:00"),
    ("8 de la mañana", "08:00"), ("19:30 Uhr", "19:30"), ("7.30 uhr morgens", "07:30"),
    ("13 de la tarde", None), ("25 Uhr", None), ("Uhr", None), ("de la tarde", None)])
def test_times_in_spanish_and_german(typed: str, hhmm: str | None) -> None:
    assert parse_time(typed) == hhmm


def test_days_are_named_in_the_language() -> None:
    assert describe_days("135") == "on Mon, Wed, Fri"
    with i18n.speaking("es"):
        assert describe_days("135") == "los lun, mié, vie"
        assert describe_days("1234567") == "cada día"
    with i18n.speaking("de"):
        assert describe_days("135") == "am Mo., Mi., Fr."


def _in(lang: str, *answers: str) -> list[str]:
    with i18n.speaking(lang):
        return [_(a) for a in answers]


async def _user(sessions: async_sessionmaker[DbSession], user_id: str) -> User:
    async with sessions() as db:
        return (await db.scalars(select(User).filter_by(channel_user_id=user_id))).one()


async def test_the_platform_language_is_taken_at_first_contact(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start", language="es-ES")
    assert "No es un diagnóstico" in patient.text
    assert [b.label for b in patient.buttons] == ["Estoy de acuerdo", "No estoy de acuerdo"]
    assert (await _user(sessions, "u1")).language == "es"
    # Later messages say nothing of the language (Slack's): the stored one holds.
    await patient.press("Estoy de acuerdo")
    assert "Pregunta de seguridad 1 de" in patient.text


async def test_an_unknown_platform_language_gives_the_default(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    engine = Engine(sessions, program, clock, default_language="de")
    patient = Patient(engine, "u1")
    await patient.send("/start", language="pt-BR")
    assert [b.label for b in patient.buttons] == ["Einverstanden", "Nicht einverstanden"]
    assert (await _user(sessions, "u1")).language == "de"


async def test_switching_language_mid_questionnaire_keeps_the_question_and_answers(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all(*CLEAN_SCREEN[:KUJALA_AT + 3])
    assert "Knee score 4 of 13: Stairs?" in patient.text
    async with sessions() as db:
        before = (await db.scalars(select(ConversationState))).one()
    await patient.send("/language")
    assert [b.label for b in patient.buttons] == ["English", "Español", "Deutsch"]
    await patient.press("Español")
    assert "A partir de ahora le escribiré en español." in patient.text
    assert "Puntuación de rodilla 4 de 13: ¿Escaleras?" in patient.text
    async with sessions() as db:
        after = (await db.scalars(select(ConversationState))).one()
    assert (after.flow, after.step, after.answers) == (before.flow, before.step, before.answers)
    # The rest of the questionnaire in Spanish, then German by typing /language de.
    await patient.press("Sin dificultad")
    await patient.send("/language de")
    assert "Ab jetzt schreibe ich Ihnen auf Deutsch." in patient.text
    assert "Knie-Score 5 von 13: In die Hocke gehen?" in patient.text
    async with sessions() as db:
        state = (await db.scalars(select(ConversationState))).one()
    assert state.answers["kujala"] == [0, 1, 1, 0]
    assert (await _user(sessions, "u1")).language == "de"
    await patient.send("/mydata")  # the language is in the export, and the question stays
    document = next(r.document for r in patient.replies if r.document is not None)
    assert json.loads(document.content)["tables"]["users"][0]["language"] == "de"
    assert "Knie-Score 5 von 13" in patient.text


async def test_bad_language_choices_are_refused_and_change_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.press("I agree")
    question = patient.text
    user = await _user(sessions, "u1")
    for typed in ("/language klingon", "/language 🦵", "/language " + "x" * 5000,
                  "/language 42"):
        await patient.send(typed)
        assert "I do not speak that language" in patient.text
        assert [b.label for b in patient.buttons] == list(i18n.LANGUAGES.values())
    for forged in (ButtonToken(step="lang", ref=user.id + 1, value="es").encode(),
                   ButtonToken(step="lang", ref=user.id, value="fr").encode(),
                   ButtonToken(step="lang", ref=user.id, value="").encode(), "lang|x|es"):
        await patient.press_token(forged)
        assert "not one of mine" in patient.text or "earlier question" in patient.text
        assert "A partir" not in patient.text
    assert (await _user(sessions, "u1")).language == "en"
    await patient.send("/language")
    await patient.press("English")  # the language it has already: said and asked again
    assert "From now on I will write in English." in patient.text
    assert question.splitlines()[-1] in patient.text


async def test_a_stranger_cannot_choose_a_language(engine: Engine) -> None:
    patient = Patient(engine, "u9")
    await patient.press_token(ButtonToken(step="lang", ref=1, value="es").encode())
    assert "Send /start to begin." in patient.text
    await patient.send("/language es")
    assert "Send /start to begin." in patient.text


def test_no_bracketless_words_helper() -> None:
    """The helper the pseudo-language tests use finds words outside brackets."""
    assert _outside("[Héllo [wórld]] 42 » ✓") == []
    assert _outside("[Héllo] Stairs? [x]") == ["Stairs"]
    assert _outside("1. [Brídgé] (/how 9)") == []


def _outside(text: str) -> list[str]:
    """The words of `text` outside brackets: each one came from no catalog. Commands are the
    same in every language (/how), so they do not count."""
    text = re.sub(r"/[a-z]+", "", text)
    while True:
        stripped = re.sub(r"\[[^\[\]]*\]", "", text)
        if stripped == text:
            return re.findall(r"[^\W\d_]{2,}", stripped)
        text = stripped


# --- whole journeys -------------------------------------------------------------------------
FIRST_PROMPT_DELAY = timedelta(hours=23, seconds=10)  # clock fixture 14 Jan 08:00 -> 15 Jan 07:00
# English words no Spanish or German reply has: one of them is an untranslated string.
ENGLISH = re.compile(r"\b(the|your|you|and|is|to|Please|Send|level|pain|knee)\b")


@pytest.fixture
async def slack_url(slack_api: SlackServer, engine: Engine) -> AsyncIterator[str]:
    port = free_port()
    channel = SlackChannel(Settings(  # type: ignore[arg-type]
        slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
        slack_api_url=f"{slack_api.root}/api/", listen=f"127.0.0.1:{port}"), engine)
    await channel.start()
    yield f"http://127.0.0.1:{port}/slack/events"
    await channel.stop()


def _screen(lang: str, city: str) -> list[str]:
    answers = _in(lang, *CLEAN_SCREEN)
    return [city if a == "London" else a for a in answers]


def _only(lang: str, texts: list[str]) -> None:
    for text in texts:
        assert not ENGLISH.search(text), f"English in a {lang} reply: {text!r}"


async def test_a_spanish_patient_on_telegram_to_the_first_prompt_and_a_level_change(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    telegram_api.languages[2001] = "es"
    ana = Person(telegram_api, 2001)
    await ana.say("/start")
    assert "No es un diagnóstico" in ana.text
    await ana.answer_all(*_screen("es", "Madrid"))
    assert "Todo listo. Su puntuación de rodilla es" in ana.text
    assert "Le recordaré cada día a las 07:00 (Europe/Madrid)" in ana.text
    ticks = Scheduler(sessions, program, clock, grace=timedelta(minutes=180))
    sender = OutboxSender(sessions, {"telegram": telegram_bot.deliverer}, clock, rate=28)
    clock.advance(FIRST_PROMPT_DELAY - timedelta(hours=1))  # 07:00 in Madrid is 06:00 UTC
    assert (await ticks.tick()).prompts == 1
    await sender.drain()
    prompt = ana.question
    assert prompt.text.startswith("Es la hora de los ejercicios de rodilla de hoy (nivel 2)")
    assert "Rodillo en la cara externa del muslo" in prompt.text
    assert "Cómo se hace: Rodillo en la cara externa del muslo" in prompt.tokens()
    await ana.press("Hecho", prompt)
    assert telegram_api.last(2001).text  # the edit of the pressed prompt
    edited = [m for m in telegram_api.to(2001) if m.message_id == prompt.message_id][-1]
    assert edited.text.startswith("Sesión del 15 ene 2026")
    await ana.answer_all("7")
    assert "así que volvemos al nivel 1." in ana.text
    async with sessions() as db:
        assert (await db.scalars(select(ProgramState))).one().level == 1
    _only("es", [m.text for m in telegram_api.to(2001)])
    assert "language_code" not in str(telegram_api.menus.get("", [])[:1])
    menu = {c["command"]: c["description"] for c in telegram_api.menus["es"]}
    assert menu["today"] == "los ejercicios de hoy; informar de cómo ha ido"
    assert [c["command"] for c in telegram_api.menus["de"]] == [n for n, _d in MENU]


async def test_a_german_patient_on_slack_to_the_first_prompt_and_a_level_change(
        slack_api: SlackServer, slack_url: str, sessions: async_sessionmaker[DbSession],
        program: Program, clock: ManualClock, engine: Engine) -> None:
    slack_api.locales["U0DE"] = "de-DE"
    lena = SlackPerson(slack_api, slack_url, "U0DE")
    await lena.command("start")
    assert "Er stellt keine Diagnose" in lena.text
    await lena.answer_all(*_screen("de", "Berlin"))
    assert "Alles bereit. Ihr Knie-Score ist" in lena.text
    assert "Ich erinnere Sie jeden Tag um 07:00 (Europe/Berlin)" in lena.text
    ticks = Scheduler(sessions, program, clock, grace=timedelta(minutes=180))
    sender = OutboxSender(sessions, {"slack": SlackChannel.deliverer(Settings(  # type: ignore[arg-type]
        slack_bot_token=BOT_TOKEN, slack_api_url=f"{slack_api.root}/api/"))}, clock, rate=28)
    clock.advance(FIRST_PROMPT_DELAY - timedelta(hours=1))  # 07:00 in Berlin is 06:00 UTC
    assert (await ticks.tick()).prompts == 1
    await sender.drain()
    prompt = lena.question
    assert "Zeit für die heutigen Knieübungen (Stufe 2)" in prompt.shown()
    await lena.press("Erledigt", prompt)
    await lena.answer_all("7")
    assert "deshalb gehen wir zurück auf Stufe 1." in lena.text
    async with sessions() as db:
        assert (await db.scalars(select(ProgramState))).one().level == 1
    await lena.command("settings")
    assert "Wochenzusammenfassung sonntags um" in lena.text
    home = json.dumps(slack_api.homes["U0DE"][-1], ensure_ascii=False)  # the App Home too
    assert "Stufe 1" in home and "Heutige Einheit: erledigt" in home
    _only("de", [p.shown() for p in slack_api.to(lena.channel)])


async def test_no_string_left_behind_in_the_pseudo_language(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """The patient's whole journey in en_XA: a reply word outside brackets came from no
    catalog, and the test names it."""
    patient = Patient(engine, "xa")
    await patient.send("/start")
    async with sessions() as db, db.begin():
        (await db.scalars(select(User))).one().language = i18n.PSEUDO
    seen: list[str] = []

    def check() -> None:
        for reply in patient.replies:
            # A language's button is its own name in that language, in every language.
            texts = [reply.text, *(b.label for row in reply.buttons for b in row
                                   if b.label not in i18n.LANGUAGES.values())]
            for text in texts:
                assert _outside(text) == [], f"outside the catalog: {text!r}"
                seen.append(text)

    async def go(*answers: str) -> None:
        for answer in answers:
            label = i18n.pseudo(answer)
            if any(b.label == label for b in patient.buttons):
                await patient.press(label)
            else:
                await patient.send(answer)
            check()

    await go("/start", *CLEAN_SCREEN)
    assert any("Áll sét" in t for t in seen)
    for command in ("/today", "Done", "7", "/progress", "/how", "/how 1", "/how nothing",
                    "/settings", "Summary day", "Mon", "/settings", "Days", "lun-vie",
                    "/pain", "3", "/help", "/mydata", "/pause", "/today", "/resume",
                    "/stop", "No", "/language", "/delete", "nope", "/cancel", "/cancel",
                    "/nonsense", "hello", "/invite", "/start"):
        await go(command)
    # A button from an old question, and the first daily prompt of the tick.
    await patient.press_token(ButtonToken(step="prompt", ref=999, value="done").encode())
    check()


async def test_no_string_left_behind_for_coaches_and_admins(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    """A coach's and an admin's flows in en_XA, a patient of the coach's among them."""
    engine = Engine(sessions, program, clock, admins=frozenset({("console", "root")}))
    root, coach = Patient(engine, "root"), Patient(engine, "coachx")
    await root.send("/start")
    await coach.send("/start")
    await root.send("/grant coach console:coachx")
    async with sessions() as db, db.begin():
        for user in (await db.scalars(select(User))).all():
            user.language = i18n.PSEUDO
    await coach.send("/invite")
    code = re.search(r"/join ([A-Z0-9]{8})", coach.text)
    assert code is not None, coach.text
    pam = Patient(engine, "pam")
    await pam.send(f"/start {code.group(1)}")
    await pam.answer_all(*CLEAN_SCREEN)
    await pam.send("/ask")
    await pam.send("My knee clicks")
    staff_steps = [
        (coach, ["/patients", "/patients 2", "/broadcast", "Hello team", "/cancel",
                 "/broadcast", "Hello team"]),
        (coach, ["Schedule"]),
        (coach, ["2020-01-01 10:00", "2026-02-30 10:00", "9999-12-31 10:00", "/cancel",
                 "/clear", "/clear console:pam", "/clear console:pam 9", "/clear nobody",
                 "/reply", "/reply console:nobody hi", "/reply console:pam Keep going",
                 "/invite revoke NOPE", "/stats", "/export", "/coaches", "/help",
                 "/start", "/language"]),
        # The patient's file and prescription: each command's refusals, changes and buttons.
        (coach, ["/patient", "/patient console:nobody", "/patient console:pam x",
                 "/level console:pam 3", "/level console:pam 3", "/level console:pam 99",
                 "/level", "/hold console:pam", "/hold console:pam", "/hold",
                 "/exercise console:pam knee_ext off", "/exercise console:pam knee_ext off",
                 "/exercise console:pam R4 off", "/exercise console:pam nope off",
                 "/exercise", "/instruct console:pam Keep going", "/instruct",
                 "/instruct console:pam " + "x" * 301, "/patient console:pam",
                 "Change the prescription", "Let the level move up", "Remove the instruction",
                 "/instruct console:pam -", "/patient console:pam 2",
                 "/patient console:pam 3", "/unhold console:pam"]),
        (root, ["/stats 7d", "/stats x", "/export 7d", "/export x", "/coaches", "/coaches 9",
                "/assign",
                "/assign console:pam console:nobody", "/assign console:pam console:coachx",
                "/assign console:root console:coachx", "/grant coach", "/grant coach x:y",
                "/revoke coach console:nobody", "/invite", "/patients", "/help"]),
    ]
    seen: list[str] = []
    for person, steps in staff_steps:
        for step in steps:
            label = i18n.pseudo(step)
            if any(b.label == label for b in person.buttons):
                await person.press(label)
            else:
                await person.send(step)
            for reply in person.replies:
                texts = [reply.text, *(b.label for row in reply.buttons for b in row
                                       if b.label not in i18n.LANGUAGES.values())]
                for text in texts:
                    # People's names and ids, the coach's broadcast and a patient's message
                    # are data, shown as written: not ours to word.
                    text = re.sub(r"Name of \w+|console:\w+|Hello team|My knee clicks|"
                                  r"Keep going", "", text)
                    assert _outside(text) == [], f"{step}: outside the catalog: {text!r}"
                    seen.append(text)
    said = "\n".join(seen)
    for heard in ("[Ýóúr pátíéñts", "[Prévíéw, tó 1 pátíéñt:]", "[Séñt tó",
                  "[Çóáçhés (págé", "[Óñé rów pér pátíéñt", "[Présçríptíóñ óf",
                  ": pátíéñt fílé, págé 2 óf", "[Lévél hístórý]", "[Íñstrúçtíóñ sét]"):
        assert heard in said, heard


async def test_a_coach_change_is_told_and_prompted_in_the_patients_language(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    """The coach works in English; their Spanish patient reads the notice of each change and
    the next daily prompt, the coach's instruction under it, in Spanish."""
    engine = Engine(sessions, program, clock, admins=frozenset({ADMIN}))
    coach, code = await coach_named(engine, "coach")
    ana = await patient_of(engine, code, "ana")
    await ana.send("/language")
    await ana.press("Español")
    await coach.send("/exercise console:ana knee_ext off")
    assert coach.text.startswith("Knee extension with the foot turned out switched off for "
                                 "Name of ana (console:ana). I have told them.")
    await coach.send("/instruct console:ana Baje despacio esta semana.")
    assert coach.text.startswith("Instruction set for Name of ana")
    async with sessions() as db:
        notes = [p["text"] for p in (await db.scalars(select(Outbox.payload).where(
            Outbox.kind == "reply", Outbox.chat_id == "ana").order_by(Outbox.id))).all()]
    assert notes == ["Su entrenador ha quitado Extensión de rodilla con el pie girado hacia "
                     "fuera de sus sesiones.",
                     "Su entrenador ha añadido una indicación a cada sesión: Baje despacio "
                     "esta semana."]
    clock.set(FIRST_PROMPT)
    assert (await scheduler(sessions, program, clock).tick()).prompts == 1
    async with sessions() as db:
        prompt = (await db.scalars(select(Outbox.payload).filter_by(
            kind="prompt", chat_id="ana"))).one()
    assert prompt["text"].startswith("Es la hora de los ejercicios de rodilla de hoy (nivel 2)")
    assert "\n\nDe su entrenador: Baje despacio esta semana.\n\n" in prompt["text"]
    assert "Extensión de rodilla" not in prompt["text"]
    _only("es", [*notes, prompt["text"], *(b["label"] for row in prompt["buttons"]
                                          for b in row)])


def test_every_exercise_and_note_is_translated_and_a_missing_one_stops_start_up(
        tmp_path: Path) -> None:
    program = load_program()
    for exercise in program.exercises:
        assert set(exercise.translations) == set(PROGRAM_LANGUAGES), exercise.id
    notes = {d.note for level in program.levels for d in level.doses.values() if d.note}
    assert all(set(program.notes[n]) == set(PROGRAM_LANGUAGES) for n in notes)
    shipped = default_program_path().read_text(encoding="utf-8")
    path = tmp_path / "program.toml"
    without_de = re.sub(r"\[exercises\.translations\.de\]\nname = .*\nhow = .*\n", "",
                        shipped, count=1)
    path.write_text(without_de, encoding="utf-8")
    with pytest.raises(ProgramError, match=r"exercises\.0\.translations \(exercise 'roll'\): "
                                           r"Value error, no translation in de"):
        load_program(path)
    bare = re.sub(r"\[exercises\.translations\.es\]\nname = .*\nhow = .*\n", "",
                  without_de, count=1)  # no translation at all
    path.write_text(bare, encoding="utf-8")
    with pytest.raises(ProgramError, match="no translation in es, de"):
        load_program(path)
    path.write_text(shipped.replace('"quarter depth" = {', '"a quarter" = {'), encoding="utf-8")
    with pytest.raises(ProgramError, match="quarter depth"):
        load_program(path)


# --- coach alerts: in the coach's language ----------------------------------------------------
async def _alerts(sessions: async_sessionmaker[DbSession], chat_id: str) -> list[dict[str, Any]]:
    async with sessions() as db:
        return list((await db.scalars(select(Outbox.payload).where(
            Outbox.kind == "alert", Outbox.chat_id == chat_id).order_by(Outbox.id))).all())


async def _miss_three_prompts(sessions: async_sessionmaker[DbSession], program: Program,
                              clock: ManualClock) -> None:
    """Five daily ticks nobody answers: the fourth records the third missed prompt."""
    ticks = scheduler(sessions, program, clock)
    clock.set(FIRST_PROMPT + timedelta(seconds=30))
    for _day in range(5):
        await ticks.tick()
        clock.advance(timedelta(days=1))


async def test_a_german_coach_reads_a_spanish_patients_alerts_and_file_in_german(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    engine = Engine(sessions, program, clock, admins=frozenset({ADMIN}))
    coach, code = await coach_named(engine, "coach")
    await coach.send("/language")
    await coach.press("Deutsch")
    ana, bea = (await patient_of(engine, code, "ana"), await patient_of(engine, code, "bea"))
    for patient in (ana, bea):
        await patient.send("/language")
        await patient.press("Español")
    await _miss_three_prompts(sessions, program, clock)
    await ana.send("/pain")
    await ana.press("9")
    assert "Su programa" in ana.text or "pausado" in ana.text, ana.text  # hers in Spanish
    texts = [p["text"] for p in await _alerts(sessions, "coach")]
    assert texts[0] == "Name of ana (console:ana) ist Ihnen mit einem Einladungscode beigetreten."
    assert ("Name of bea (console:bea) hat 3 Erinnerungen in Folge verpasst (die letzte am "
            "17.01.2026).") in texts
    assert texts[-1] == (
        "Name of ana (console:ana) meldete Schmerz 9/10 (eine /pain-Meldung); das Programm ist "
        "pausiert, bis Sie es freigeben (/clear console:ana).")
    _only("de", [re.sub(r"/[a-z]+", "", t) for t in texts])
    await coach.send("/patient console:ana")
    assert "meldete Schmerz 9/10 (eine /pain-Meldung)" in coach.text, coach.text
    await ana.send("/resume")  # the clear request: its latest answers and buttons too
    request = (await _alerts(sessions, "coach"))[-1]
    assert request["text"].startswith(
        "Name of ana (console:ana) bittet um Fortsetzung. Pausiert seit "), request
    assert "Grund: meldete Schmerz 9/10 (eine /pain-Meldung) (Regel R4). Zuletzt: letzter " \
           "Schmerz 9/10 (/pain-Meldung, " in request["text"], request
    assert request["buttons"][0][0]["label"].startswith(
        "Aufheben, Neustart mit Stufe "), request
    await coach.send("/clear console:ana")
    async with sessions() as db:
        hold = (await db.scalars(select(Hold))).one()
    # Stored as message ids and values, not in anyone's language: each reader's at read time.
    with i18n.speaking("es"):
        assert shown(hold.reason) == "informó de un dolor de 9/10 (un aviso con /pain)"
        assert shown(hold.lift_reason) == "levantada por su coach"
    assert shown(hold.reason) == "reported pain 9/10 (a /pain report)"


def test_a_reason_stored_before_as_plain_text_is_shown_as_stored() -> None:
    with i18n.speaking("de"):
        for stored in ("reported pain 8/10 during the session", "{broken", '{"id": 3}', "",
                       None, "😀 " * 5000):
            assert shown(stored) == stored
        assert shown(wording(N_("at onboarding")).stored()) == "bei der Anmeldung"


async def test_alerts_to_a_coach_in_the_pseudo_language_come_from_the_catalog(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    engine = Engine(sessions, program, clock, admins=frozenset({ADMIN}))
    _, code = await coach_named(engine, "coachx")
    async with sessions() as db, db.begin():
        (await db.scalars(select(User).filter_by(channel_user_id="coachx"))).one().language = (
            i18n.PSEUDO)
    pam = await patient_of(engine, code, "pam")
    await _miss_three_prompts(sessions, program, clock)
    await pam.send("/pain")
    await pam.press("9")
    await pam.send("/resume")
    alerts = await _alerts(sessions, "coachx")
    assert len(alerts) == 4, [a["text"] for a in alerts]  # joined, missed, hold, resume
    texts = [a["text"] for a in alerts] + [b["label"] for a in alerts
                                           for row in a.get("buttons", []) for b in row]
    for text in texts:
        assert _outside(re.sub(r"Name of \w+|console:\w+", "", text)) == [], text


async def test_a_patient_with_no_stored_language_is_prompted_in_the_default_one(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    """A row from before migration 0013 (language NULL): the tick speaks
    KNEECOACH_DEFAULT_LANGUAGE, as the engine does."""
    await enrolled(engine, "old")
    async with sessions() as db, db.begin():
        (await db.scalars(select(User).filter_by(channel_user_id="old"))).one().language = None
    clock.set(FIRST_PROMPT)
    assert (await scheduler(sessions, program, clock, default_language="de").tick()).prompts == 1
    async with sessions() as db:
        prompt = (await db.scalars(select(Outbox.payload).filter_by(kind="prompt"))).one()
    assert prompt["text"].startswith("Zeit für die heutigen Knieübungen (Stufe "), prompt
