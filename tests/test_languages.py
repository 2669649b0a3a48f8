"""Every patient in their own language: the catalogs are complete and match the code, the
language is taken from the platform at first contact or /language, and switching keeps the
question. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import CLEAN_SCREEN, KUJALA_AT, Patient
from conversations import i18n
from conversations.engine import Engine
from conversations.i18n import _
from conversations.localtime import describe_days, parse_days, parse_time
from conversations.messages import ButtonToken
from storage.models import ConversationState, User

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
            str(ROOT), [("conversations/**.py", "python")]):
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
        sessions: async_sessionmaker[DbSession], program: object, clock: object) -> None:
    engine = Engine(sessions, program, clock, default_language="de")  # type: ignore[arg-type]
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


def _outside(text: str) -> list[str]:
    """The words of `text` outside brackets: each one came from no catalog."""
    while True:
        stripped = re.sub(r"\[[^\[\]]*\]", "", text)
        if stripped == text:
            return re.findall(r"[^\W\d_]{2,}", stripped)
        text = stripped
