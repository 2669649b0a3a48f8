"""Every answer's bad forms get a clear re-ask, and the stored state does not move."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import CLEAN_SCREEN, WORST_AT, Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import FLOWS, Engine
from conversations.messages import ButtonToken, Inbound, Outbound
from conversations.program.data import Program
from storage.models import ConversationState, PainReport, ProgramState, Session, User

HUGE = "x" * 10_000
EMOJI = "🦵🔥😀"


async def _state(sessions: async_sessionmaker[DbSession], user_id: str
                 ) -> tuple[str, str, dict, int]:
    async with sessions() as db:
        user = (await db.scalars(select(User).filter_by(channel_user_id=user_id))).one()
        state = await db.get(ConversationState, user.id)
        assert state is not None
        return state.flow, state.step, state.answers, state.version


async def _at_step(engine: Engine, answers: int) -> Patient:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all(*CLEAN_SCREEN[:answers])
    return patient


@pytest.mark.parametrize("bad", ["11", "-1", "7.5", "", "   ", HUGE, EMOJI, "seven", "1O"])
async def test_bad_pain_answers_reask(engine: Engine, sessions: async_sessionmaker[DbSession],
                                      bad: str) -> None:
    patient = await _at_step(engine, WORST_AT)  # waiting for worst pain
    before = await _state(sessions, "u1")
    assert before[1] == "worst_pain"
    await patient.send(bad)
    assert "whole number from 0 (no pain) to 10" in patient.text
    assert "worst knee pain" in patient.text  # the question again
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("bad", ["maybe", "", HUGE, EMOJI, "42"])
async def test_bad_yes_no_answers_reask(engine: Engine, sessions: async_sessionmaker[DbSession],
                                        bad: str) -> None:
    patient = await _at_step(engine, 1)
    before = await _state(sessions, "u1")
    await patient.send(bad)
    assert 'answer "yes" or "no"' in patient.text and "Safety question 1" in patient.text
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("bad", ["Mars/Olympus", "UTC+15", "", HUGE, EMOJI, "12345"])
async def test_unknown_timezone_reasks(engine: Engine, sessions: async_sessionmaker[DbSession],
                                       bad: str) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 3)
    before = await _state(sessions, "u1")
    assert before[1] == "timezone"
    await patient.send(bad)
    assert "do not know that timezone" in patient.text
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("good,stored", [("new york", "America/New_York"),
                                         ("UTC+5:30", "UTC+05:30"), ("europe/berlin",
                                                                     "Europe/Berlin")])
async def test_timezone_forms(engine: Engine, sessions: async_sessionmaker[DbSession],
                              good: str, stored: str) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 3)
    await patient.send(good)
    assert (await _state(sessions, "u1"))[2]["timezone"] == stored


@pytest.mark.parametrize("bad", ["25:00", "7:60", "noon-ish", "", HUGE, EMOJI, "13pm"])
async def test_bad_reminder_time_reasks(engine: Engine, sessions: async_sessionmaker[DbSession],
                                        bad: str) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 2)
    before = await _state(sessions, "u1")
    assert before[1] == "reminder_time"
    await patient.send(bad)
    assert "time of day" in patient.text
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("bad", ["someday", "", HUGE, EMOJI, "8"])
async def test_bad_days_reask(engine: Engine, sessions: async_sessionmaker[DbSession],
                              bad: str) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 1)
    before = await _state(sessions, "u1")
    await patient.send(bad)
    assert "mon wed fri" in patient.text
    assert await _state(sessions, "u1") == before


async def test_typed_days_are_understood(engine: Engine, sessions: async_sessionmaker[DbSession]
                                         ) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 1)
    await patient.send("Monday, Thursday")
    assert "on Mon, Thu at 07:00" in patient.text


async def test_stale_button_is_refused_and_state_kept(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at_step(engine, 1)
    old_no = next(b.token for b in patient.buttons if b.label == "No")
    await patient.press("No")
    before = await _state(sessions, "u1")
    await patient.press_token(old_no)  # the keyboard of question 1, pressed again
    assert "earlier question" in patient.text and "Safety question 2" in patient.text
    assert any(r.edit_message_id and r.text == "" for r in patient.replies)
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("forged", [
    "redflag_2|999|yes", "nonsense", "", "a" * 200, "redflag_2|1|<script>", "🦵|1|yes",
    "prompt|424242|done", "check|1|2",
])
async def test_forged_buttons_do_nothing(engine: Engine, sessions: async_sessionmaker[DbSession],
                                         forged: str) -> None:
    patient = await _at_step(engine, 2)
    before = await _state(sessions, "u1")
    await patient.press_token(forged)
    assert "earlier question" in patient.text
    assert await _state(sessions, "u1") == before


async def test_a_button_with_a_value_the_step_does_not_offer_is_refused(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at_step(engine, 1)
    _, step, _, version = await _state(sessions, "u1")
    token = ButtonToken(step=step, ref=version, value="maybe").encode()
    await patient.press_token(token)
    assert "earlier question" in patient.text
    assert (await _state(sessions, "u1"))[3] == version


async def test_another_users_session_button_does_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    alice = await enrolled(engine, "alice")
    bob = await enrolled(engine, "bob")
    await alice.send("/today")
    async with sessions() as db:
        session = (await db.scalars(select(Session))).one()
    await bob.press_token(ButtonToken(step="prompt", ref=session.id, value="done").encode())
    assert "earlier question" in bob.text
    async with sessions() as db:
        assert (await db.get(Session, session.id)).status == "prompted"  # type: ignore[union-attr]


async def test_unknown_command_mid_flow_reasks(engine: Engine,
                                               sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at_step(engine, 3)
    before = await _state(sessions, "u1")
    await patient.send("/frobnicate now")
    assert "do not know /frobnicate" in patient.text and "Safety question 3" in patient.text
    assert await _state(sessions, "u1") == before


async def test_commands_before_start_store_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    for text in ("/today", "/pain", "hello", HUGE, EMOJI, "/delete"):
        await patient.send(text)
        assert "Send /start to begin" in patient.text
    await patient.press_token("redflag_1|0|yes")
    async with sessions() as db:
        assert (await db.scalars(select(User))).all() == []


async def test_pain_report_bad_forms_store_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/pain")
    for bad in ("11", "-1", "7.5", "", HUGE, EMOJI):
        await patient.send(bad)
        assert "whole number" in patient.text
    async with sessions() as db:
        contexts = (await db.scalars(select(PainReport.context))).all()
    assert contexts == ["baseline"]


async def test_redelivered_update_is_handled_once(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at_step(engine, 1)
    await patient.send("no", update_id="777")
    assert "Safety question 2" in patient.text
    await patient.send("no", update_id="777")
    assert patient.replies == []
    assert (await _state(sessions, "u1"))[1] == "redflag_2"


async def test_inbound_must_be_exactly_one_kind() -> None:
    with pytest.raises(ValueError):
        Inbound(channel="console", user_id="u", chat_id="c", text="hi", button="x")
    with pytest.raises(ValueError):
        Inbound(channel="console", user_id="u", chat_id="c")


@pytest.mark.parametrize("channel", ["", "x", "Telegram", "tele gram", "sms1", "a" * 17,
                                     "telegram:1", "console\n"])
def test_a_channel_is_a_short_lowercase_name(channel: str) -> None:
    with pytest.raises(ValueError):
        Inbound(channel=channel, user_id="u", chat_id="c", text="hi")
    with pytest.raises(ValueError):
        Outbound(channel=channel, chat_id="c", text="hi")


# --- the bad-input corpus ------------------------------------------------------------------
# Every conversation state is reached by a real journey; at each, a corpus of bad inputs goes
# through the engine: wrong types, out of range, empty, huge, emoji, control characters,
# Unicode digits, forged and stale buttons, commands the user may not use. Nothing may raise,
# everything is answered, and every stored state stays valid. After each input the state is
# put back, so every input meets the state it was made for.
BAD_TEXTS = (
    "", " ", "\t\n", "\x00", "a\x00b", "\x1b[31mred", "\u202eevil", "\ufeff", "\u200b",
    "\ud800", "-1", "11", "1e3", "0x10", "७", "²", "³", "⑦", "⓪", "３", "1²", "9" * 40,
    "-" * 3, "yes no", "DROP TABLE users;", "' OR 1=1 --", "<script>x</script>", "%s%n",
    "🦵🔥😀", "👍🏽" * 50, "x" * 20_001, "é" * 5_000, "None", "null", "[]", "{}", "true",
    "25:61", "9999-12-31 23:59", "0000-00-00 00:00", "2026-02-30 10:00", "UTC+99",
    "Mars/Olympus", "\\", "/", "//", "/ ", "@", "|||", "consent|²|agree",
)
NOT_ALLOWED = (
    "/grant coach console:root", "/revoke coach console:x", "/stats all", "/export 7d",
    "/broadcast", "/invite", "/invite revoke ²", "/patients ²", "/patients -1", "/join ⑦⑦⑦⑦⑦⑦",
    "/join " + "A" * 300, "/frobnicate", "/start@other_bot x y z", "/help " + "🦵" * 100,
    "/" + "x" * 100, "/STATS", "/today\x00",
)
STATUSES_OK = {"pending", "onboarding", "active", "paused", "referred", "stopped", "staff"}


def _generated(rng: random.Random, step: str, version: int) -> list[tuple[str, str]]:
    """Inputs made for one state: random text over all of Unicode, numbers out of range and
    buttons forged around this step's own token."""
    def text(size: int) -> str:
        return "".join(chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x110000))))
                       for _ in range(size))
    made = [("text", text(rng.randrange(1, 40))) for _ in range(4)]
    made += [("text", str(rng.choice((-1, 11, 12, 99, 10**6, 2**63)))),
             ("text", rng.choice("²³¹⑦⓪٣３𝟕") * rng.randrange(1, 3))]
    made += [("press", f"{step}|{version}|{text(3)}"), ("press", f"{step}|{version + 7}|yes"),
             ("press", f"{step}|{max(version - 1, 0)}|no"), ("press", f"{step}|²|1"),
             ("press", f"{step}|{version}|" + "x" * 60), ("press", text(rng.randrange(0, 70))),
             ("press", f"prompt|{rng.randrange(10**12)}|done"), ("press", "check|⓪|1"),
             ("press", "")]
    return made


class Corpus:
    def __init__(self, engine: Engine, sessions: async_sessionmaker[DbSession],
                 program: Program) -> None:
        self.engine = engine
        self.sessions = sessions
        self.program = program
        self.rng = random.Random(18)
        self.covered: set[tuple[str, str]] = set()
        self.sent = 0

    async def visit(self, patient: Patient) -> None:
        """Throw the corpus at the patient's current state, once per state."""
        flow, step, answers, version = await _state(self.sessions, patient.user_id)
        if (flow, step) in self.covered:
            return
        self.covered.add((flow, step))
        inputs = [("text", t) for t in BAD_TEXTS] + [("text", c) for c in NOT_ALLOWED]
        inputs += _generated(self.rng, step, version)
        for kind, value in inputs:
            replies = await (patient.send(value) if kind == "text" else
                             patient.press_token(value))
            self.sent += 1
            assert [r for r in replies if r.edit_message_id is None], (flow, step, value)
            await self._check_and_put_back(patient.user_id, flow, step, answers)
        await patient.send("/help")  # asks the question again, with this version's buttons

    async def _check_and_put_back(self, user_id: str, flow: str, step: str,
                                  answers: dict) -> None:
        """Every stored state is valid after the input; then the state it met is put back."""
        async with self.sessions() as db, db.begin():
            user = (await db.scalars(select(User).filter_by(channel_user_id=user_id))).one()
            assert user.status in STATUSES_OK
            state = await db.get(ConversationState, user.id)
            assert state is not None
            assert state.flow == "idle" or state.step in FLOWS[state.flow], (state.flow,
                                                                              state.step)
            program = await db.get(ProgramState, user.id)
            assert program is None or 1 <= program.level <= self.program.top_level
            if (state.flow, state.step, state.answers) != (flow, step, answers):
                state.flow, state.step, state.answers = flow, step, answers
                state.version += 1


async def _walk(corpus: Corpus, patient: Patient, *actions: str) -> None:
    """Press a label (or type it when no button has it), visiting every state on the way."""
    for action in actions:
        await corpus.visit(patient)
        await patient.answer_all(action)
    await corpus.visit(patient)


async def test_the_bad_input_corpus_in_every_state(
        sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    engine = Engine(sessions, program, clock, admins=frozenset({("console", "root")}))
    corpus = Corpus(engine, sessions, program)
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await _walk(corpus, patient, *CLEAN_SCREEN)
    async with sessions() as db:
        user = (await db.scalars(select(User).filter_by(channel_user_id="u1"))).one()
    assert user.status == "active"
    await _walk(corpus, patient, "/today", "Done", "3")
    clock.advance(timedelta(days=1))
    await _walk(corpus, patient, "/today", "Same or better", "No")
    for setting in ("Time", "Days", "Timezone", "Summary day"):
        await _walk(corpus, patient, "/settings", setting, "/cancel")
    await _walk(corpus, patient, "/stop", "No", "/delete", "/cancel")
    clock.advance(timedelta(days=29))
    await _walk(corpus, patient, "/today", "Now")
    while patient.buttons and (await _state(sessions, "u1"))[0] == "kujala":
        await _walk(corpus, patient, patient.buttons[0].label)
    await _walk(corpus, patient, "/pain", "9")  # a spike: a hold, lifted by an assessment
    clock.advance(timedelta(days=1))  # confirmed from the next local day on
    await _walk(corpus, patient, "/resume")
    while patient.buttons and (await _state(sessions, "u1"))[0] == "resume":
        await _walk(corpus, patient, patient.buttons[0].label)
    # A coach, for the broadcast flow: their patient is u1.
    coach = Patient(engine, "coach")
    await coach.send("/start")
    await Patient(engine, "root").send("/grant coach console:coach")
    await coach.send("/invite")
    await patient.send(f"/join {coach.text.split('Invite code: ')[1].split(' ')[0]}")
    assert "now connected" in patient.text
    await _walk(corpus, coach, "/broadcast", "Hello", "Schedule")
    await _walk(corpus, patient, "/ask", "A question")  # messages between them
    await _walk(corpus, coach, "/reply console:u1", "An answer")
    every = {(flow, step) for flow, steps in FLOWS.items() for step in steps}
    missing = every - corpus.covered
    assert not missing, sorted(missing)
    assert corpus.sent >= 500
