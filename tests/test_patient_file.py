"""A patient's file for their coach (/patient), on SQLite and PostgreSQL: a patient with six
weeks of history (sessions, a pain pause cleared by the coach, a Kujala at four weeks, a
prescription, a message) reads as its sections, page by page, none over the platforms'
limits, with the chart on page 1; a coach opens only their own patients' files, an admin
anyone's; the unread messages are read once their own coach opens it; forged buttons do
nothing; and over Telegram the file, its chart and its page buttons arrive and work."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from clinic import ADMIN, audits
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from test_prescription import KNEE_EXT
from tick_and_send import FIRST_PROMPT, scheduler

from bot.channels.slack import SlackChannel
from bot.channels.telegram import TelegramChannel
from bot.sender import OutboxSender
from bot.settings import Settings
from conftest import CLEAN_KUJALA, CLEAN_SCREEN, KUJALA_AT, Patient, telegram_settings
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.flows import patient_file as pf
from conversations.flows import prescription as rx
from conversations.messages import ButtonToken
from conversations.program.data import Program
from fake_api import free_port
from slack_server import BOT_TOKEN, SIGNING_SECRET, SlackPerson, SlackServer
from storage import messages
from storage.models import User
from telegram_server import BotApiServer, Person

LIMIT = 3000  # the smaller of the platforms' limits (a Slack section); Telegram's is 4096
# Better answers at the four-week Kujala than at the start (CLEAN_SCREEN's).
KUJALA_LATER = ("None", "Full weight without pain", "Unlimited", "No difficulty",
                *CLEAN_SCREEN[KUJALA_AT + 4:KUJALA_AT + 13])
PAINS = (1, 2, 3, 1, 2, 4, 2)


async def six_weeks(pam: Patient, coach: Patient, clock: ManualClock) -> None:
    """42 days: most sessions done, some partly or skipped, a pain pause on day 24 that the
    coach clears, the Kujala again at four weeks, a prescription, a question at the end."""
    for day in range(42):
        await pam.send("/today")
        if "How does your knee feel" in pam.text:
            await pam.press("A little worse (+1)" if day % 9 == 4 else "Same or better")
            await pam.press("No")
        if "Four weeks have passed" in pam.text:
            await pam.press("Now")
            await pam.answer_all(*KUJALA_LATER)
            assert "Your knee score is" in pam.text, pam.text
            await pam.send("/today")
        if "Today's session" in pam.text:
            if day % 7 == 6:
                await pam.press("Skipped")
            else:
                await pam.press("Partly" if day % 5 == 3 else "Done")
                await pam.press("8" if day == 24 else str(PAINS[day % len(PAINS)]))
        if day == 24:
            assert "I have paused your program" in pam.text
            await pam.send("/resume")
            await coach.send("/clear console:pam 2")
        if day == 20:
            await coach.send("/exercise console:pam knee_ext off")
        if day == 30:
            await coach.send("/instruct console:pam Go slowly on the stairs 🙂")
        if day == 35:
            await coach.send("/hold console:pam")
        clock.advance(timedelta(days=1))
    await pam.send("/ask The knee feels *much* better on the stairs now. Can I run?")


async def pages_of(coach: Patient, first: str) -> list[str]:
    """The file's pages, from typing `first` and then pressing "More" until the last."""
    await coach.send(first)
    texts = [coach.text]
    while more := [b for b in coach.buttons if b.label.startswith("More")]:
        await coach.press(more[0].label)
        texts.append(coach.text)
    return texts


async def test_the_file_of_a_patient_with_six_weeks_of_history(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession],
        clock: ManualClock) -> None:
    coach, pam, _, _ = clinic
    await six_weeks(pam, coach, clock)
    await coach.send("/patient console:pam")
    (page,) = coach.replies
    assert page.image is not None and page.image.startswith(b"\x89PNG")  # the /progress chart
    lines = page.text.split("\n")
    assert re.fullmatch(r"Name of pam \(console:pam\): patient file, page 1 of \d", lines[0])
    assert lines[1] == "Status: active"
    assert lines[2] == "Coach: console:coach"  # staff give no name
    assert re.fullmatch(r"Level \d of 5; progression held by the coach; started 14 Jan 2026, "
                        r"worst pain then 4/10", lines[3])
    assert lines[4] == "Exercises off: Knee extension with the foot turned out"
    assert lines[5] == "Instruction: Go slowly on the stairs 🙂"
    assert re.fullmatch(r"Adherence: last 7 days \d/\d \(\d+%\), last 30 days \d+/\d+ "
                        r"\(\d+%\)", lines[6])
    assert lines[7] == (f"Kujala: baseline {CLEAN_KUJALA}/100 (14 Jan), latest "
                        f"{CLEAN_KUJALA + 6}/100 (11 Feb), change +6")
    assert lines[8:] == [
        "Unread messages from the patient: 1 (in full under Messages):",
        "- 25 Feb 08:00: The knee feels *much* better on the stairs now. Can I run?"]
    assert [b.label for row in page.buttons for b in row][-1] == pf.PRESCRIBE

    texts = await pages_of(coach, "/patient console:pam")
    assert all(len(t) <= LIMIT for t in texts)
    assert "No unread messages from the patient." in texts[0]  # read: their coach opened it
    rest = "\n".join(texts[1:])
    history = rest.split("Level history:\n")[1].split("\n\n")[0].split("\n")
    assert history[0] == "14 Jan: started at level 2 (R5)"
    assert "07 Feb: program paused at level 5 (R4)" in history
    assert "07 Feb: level 5 -> 2 (R9)" in history  # the coach's /clear console:pam 2
    holds = rest.split("Holds:\n")[1].split("\n\n")[0].split("\n")
    assert len(holds) == 1 and holds[0].startswith("07 Feb: pain hold (rule R4), they reported "
                                                   "pain 8/10 during the session; lifted")
    assert "by console:coach: cleared by their coach, restart at level 2" in holds[0]
    sessions_ = rest.split("Sessions, last 14 days:\n")[1].split("\n\n")[0].split("\n")
    # Today (25 Feb) has no session yet: the 13 days before it.
    assert [s[:10] for s in sessions_] == [f"{d} {n:02d} Feb" for d, n in zip(
        ("Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed") * 2, range(12, 25), strict=False)]
    assert "Fri 13 Feb: done, level 3, pain 3/10 during, a little worse next morning (+1)" \
        in sessions_
    assert "Tue 17 Feb: skipped, level 3" in sessions_
    assert "Mon 16 Feb: partly done, level 3, pain 4/10 during, same or better next morning" \
        in sessions_
    notes = rest.split("Prescription changes and notes:\n")[1].split("\n\n")[0].split("\n")
    assert notes == [
        "03 Feb 08:00, console:coach: Knee extension with the foot turned out switched off",
        "13 Feb 08:00, console:coach: instruction: Go slowly on the stairs 🙂",
        "18 Feb 08:00, console:coach: progression held"]
    assert rest.endswith("Messages, last 30 days:\n25 Feb 08:00, from the patient: The knee "
                         "feels *much* better on the stairs now. Can I run?")


async def test_only_their_own_coach_reads_the_unread_messages(
        clinic: tuple[Patient, ...], staff_engine: Engine,
        sessions: async_sessionmaker[DbSession]) -> None:
    coach, pam, _, _ = clinic
    await pam.send("/ask Is swimming fine?")
    async with sessions() as db:
        pam_id = (await db.scalars(select(User.id).filter_by(channel_user_id="pam"))).one()
    admin = Patient(staff_engine, ADMIN[1])
    for _ in range(2):
        await admin.send("/patient console:pam")
        assert "Unread messages from the patient: 1" in admin.text
    async with sessions() as db:
        assert len(await messages.unread(db, pam_id)) == 1
    await coach.send("/patient console:pam")
    assert "Unread messages from the patient: 1" in coach.text
    await coach.send("/patient console:pam")
    assert "No unread messages from the patient." in coach.text
    async with sessions() as db:
        assert await messages.unread(db, pam_id) == []
    assert [(a, d) for a, d in await audits(sessions, "open_file")][-1] == (
        "console:coach", {"patient": "console:pam", "page": 1})


@pytest.mark.parametrize(("typed", "said"), [
    ("/patient", pf.USAGE),
    ("/patient console:pam 2 3", pf.USAGE),
    ("/patient console:pam two", pf.USAGE),
    ("/patient console:pam 0", pf.USAGE),
    ("/patient console:pam 🦵", pf.USAGE),
    ("/patient console:obi", rx.NOT_YOURS.format(target="console:obi")),
    ("/patient console:nobody", rx.NOT_YOURS.format(target="console:nobody")),
    ("/patient 🦵", rx.NOT_YOURS.format(target="🦵")),
    ("/patient " + "a" * 5000, rx.NOT_YOURS.format(target="a" * 64)),
    ("/patient other", rx.NOT_YOURS.format(target="other")),
])
async def test_bad_forms_of_patient_reveal_nothing(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession], typed: str,
        said: str) -> None:
    coach, _, _, _ = clinic
    await coach.send(typed)
    assert coach.text == said
    assert all(r.image is None for r in coach.replies)
    assert await audits(sessions, "open_file") == []


async def test_a_patient_and_another_coach_cannot_open_the_file(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    _, pam, other, _ = clinic
    await pam.send("/patient console:pam")
    assert pam.text == "Sorry, /patient is only for coaches."
    await other.send("/patient console:pam")
    assert other.text == rx.NOT_YOURS.format(target="console:pam")
    assert "Name of pam" not in other.text
    assert [d for a, d in await audits(sessions, "refused") if a == "console:other"] == [
        {"command": "patient", "target": "console:pam"}]


async def test_the_patient_list_opens_each_file_and_forged_buttons_do_nothing(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    coach, pam, other, _ = clinic
    await coach.send("/patients")
    assert [b.label for b in coach.buttons] == ["1. Name of pam"]
    await coach.press("1. Name of pam")
    assert coach.text.startswith("Name of pam (console:pam): patient file, page 1 of ")
    async with sessions() as db:
        ids = {name: id_ for name, id_ in await db.execute(select(User.channel_user_id,
                                                                  User.id))}
    for presser, token in (
            (coach, ButtonToken(step=pf.STEP, ref=ids["obi"], value="1")),  # not theirs
            (coach, ButtonToken(step=pf.STEP, ref=ids["coach"], value="1")),  # not a patient
            (coach, ButtonToken(step=pf.STEP, ref=10**9, value="1")),  # nobody
            (coach, ButtonToken(step=pf.STEP, ref=ids["pam"], value="0")),
            (coach, ButtonToken(step=pf.STEP, ref=ids["pam"], value="x")),
            (other, ButtonToken(step=pf.STEP, ref=ids["pam"], value="1")),
            (pam, ButtonToken(step=pf.STEP, ref=ids["pam"], value="1"))):
        await presser.press_token(token.encode())
        assert presser.text == rx.FORGED, (token, presser.text)
    # A page past the end (the file got shorter) shows the last one.
    await coach.press_token(ButtonToken(step=pf.STEP, ref=ids["pam"], value="99").encode())
    assert re.match(r"Name of pam \(console:pam\): patient file, page (\d) of \1", coach.text)


async def test_long_messages_fill_pages_within_the_limit_and_arrive_whole(
        clinic: tuple[Patient, ...]) -> None:
    coach, pam, _, _ = clinic
    long = " ".join(f"word{n} *x* _y_" for n in range(700))  # about 9,000 characters
    assert len(long) > 8000
    for n in range(3):
        await pam.send(f"/ask {n}: {long}")
    texts = await pages_of(coach, "/patient console:pam")
    assert len(texts) >= 5 and all(len(t) <= LIMIT for t in texts)
    body = "".join(t.split("\n", 1)[1] for t in texts[1:])  # without each page's header
    for n in range(3):
        assert f"from the patient: {n}: {long}" in body.replace("\n", "")


async def telegram_coach_and_patient(telegram_api: BotApiServer) -> tuple[Person, Person]:
    """Over Telegram: the admin (9001) makes 9002 a coach, whose invite 3101 takes and then
    finishes setting up with."""
    admin, coach, pam = (Person(telegram_api, n) for n in (9001, 9002, 3101))
    await coach.say("/start")
    await admin.say("/grant coach telegram:9002")
    await coach.say("/invite")
    code = re.search(r"start=([A-Z0-9]+)", coach.text).group(1)  # type: ignore[union-attr]
    await pam.say(f"/start {code}")
    await pam.answer_all(*CLEAN_SCREEN)
    return coach, pam


async def test_the_file_and_its_chart_arrive_over_telegram_and_its_pages_turn(
        telegram_api: BotApiServer, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    engine = Engine(sessions, program, clock, admins=frozenset({("telegram", "9001")}))
    channel = TelegramChannel(telegram_settings(telegram_api), engine, poll_timeout=1)
    await channel.start()
    try:
        coach, pam = await telegram_coach_and_patient(telegram_api)
        await pam.say("/today")
        await pam.press("Done")
        await pam.press("2")
        await pam.say("/ask " + "Long question. " * 300)
        await coach.say("/patient telegram:3101")
        text, photo = coach.new
        assert text.text.startswith("Ann (telegram:3101): patient file, page 1 of 4\n")
        assert photo.kind == "photo" and photo.content.startswith(b"\x89PNG")
        assert list(text.tokens()) == ["More (page 2 of 4)", pf.PRESCRIBE]
        pages = [text]
        for n in (2, 3, 4):
            await coach.press(f"More (page {n} of 4)", pages[-1])
            (page,) = coach.new  # no chart after page 1
            assert page.text.startswith(f"Ann (telegram:3101): patient file, page {n} of 4\n")
            pages.append(page)
        assert all(len(p.text) <= 4096 for p in pages)
        assert "Sessions, last 14 days:\n" in pages[1].text
        assert "Messages, last 30 days:\n" in pages[2].text
        assert pages[-1].buttons == []  # the last page: no More
        question = "".join(p.text.split("\n", 1)[1] for p in pages[2:]).replace("\n", "")
        assert question.endswith("from the patient: " + ("Long question. " * 300).strip())
        await coach.press(pf.PRESCRIBE, text)
        assert "Prescription of Ann (telegram:3101): level 2 of 5" in coach.text
        await coach.press("Hold progression")
        assert "Progression held for Ann (telegram:3101). I have told them." in coach.text
    finally:
        await channel.stop()


async def test_a_prescription_over_telegram_is_the_next_prompt_and_today(
        telegram_api: BotApiServer, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    """A coach prescribes over Telegram (level, an exercise off, an instruction): the patient
    is told each change in a sentence, and the next daily prompt, sent through the outbox to
    the test Bot API server, and /today are exactly the prescribed session."""
    engine = Engine(sessions, program, clock, admins=frozenset({("telegram", "9001")}))
    channel = TelegramChannel(telegram_settings(telegram_api), engine, poll_timeout=1)
    outbox = OutboxSender(sessions, {"telegram": channel.deliverer}, clock, rate=1000)
    await channel.start()
    try:
        coach, pam = await telegram_coach_and_patient(telegram_api)
        instruction = "Keep the *squats* shallow this week 🦵"
        await coach.say("/level telegram:3101 3")
        await coach.say("/exercise telegram:3101 knee_ext off")
        await coach.say(f"/instruct telegram:3101 {instruction}")
        assert "Instruction set for Ann (telegram:3101)" in coach.text
        await outbox.drain()
        told = [m.text for m in telegram_api.to(3101)][-3:]
        assert told == [rx.TELL_LEVEL.format(level=3), rx.TELL_OFF.format(exercise=KNEE_EXT),
                        rx.TELL_INSTRUCT.format(text=instruction)]

        clock.set(FIRST_PROMPT)
        await scheduler(sessions, program, clock).tick()
        await outbox.drain()
        (prompt,) = [m for m in telegram_api.to(3101) if m.text.startswith("Time for today")]
        lines = [f"{i}. {line}" for i, line in enumerate(
            program.session_lines(3, off={"knee_ext"}), 1)]
        assert prompt.text == ("Time for today's knee exercises (level 3):\n" + "\n".join(lines)
                               + f"\n\nFrom your coach: {instruction}\n\nStop any exercise "
                                 "that causes sharp pain. How did it go?")
        assert not [label for label in prompt.tokens() if KNEE_EXT in label]
        await pam.say("/today")
        assert ("Today's session (level 3):\n" + "\n".join(lines) + "\n\nFrom your coach: "
                + instruction) in pam.text
        assert KNEE_EXT not in pam.text
    finally:
        await channel.stop()


async def test_the_file_and_a_prescription_over_slack(
        slack_api: SlackServer, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    port = free_port()
    engine = Engine(sessions, program, clock, admins=frozenset({("slack", "U0ADM")}))
    channel = SlackChannel(Settings(  # type: ignore[arg-type]
        slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
        slack_api_url=f"{slack_api.root}/api/", listen=f"127.0.0.1:{port}"), engine)
    await channel.start()
    try:
        url = f"http://127.0.0.1:{port}/slack/events"
        admin, coach, pam = (SlackPerson(slack_api, url, u) for u in ("U0ADM", "U0COA", "U0PAM"))
        await coach.say("/start")
        await admin.say("/grant coach slack:U0COA")
        await coach.say("/invite")
        code = coach.text.split("Invite code: ")[1].split(" ")[0]
        await pam.say("/start")
        await pam.answer_all(*CLEAN_SCREEN)
        await pam.say(f"/join {code}")
        await pam.say("/pain")
        await pam.answer_all("3")  # something to chart
        await pam.say("/ask " + "A long *question* <with> & marks. " * 150)  # 5,000+ chars
        await coach.say("/patients")
        await coach.press("1. slack:U0PAM")
        pages = int(re.search(r"patient file, page 1 of (\d)", coach.text).group(1))  # type: ignore[union-attr]
        assert pages > 2  # the question fills pages of its own
        (chart,) = [c for ch, name, c in slack_api.files
                    if ch == coach.channel and name == "kneecoach-chart.png"]
        assert chart.startswith(b"\x89PNG")
        first = coach.question
        for n in range(2, pages + 1):
            await coach.press(f"More (page {n} of {pages})")
            assert f"slack:U0PAM: patient file, page {n} of {pages}\n" in coach.text
        await coach.press(pf.PRESCRIBE, first)
        assert "Prescription of slack:U0PAM: level 2 of 5" in coach.text
        await coach.press(pf.PRESCRIBE, first)
        await coach.press("Switch off: Knee extension with the foot turned out")
        assert "switched off for slack:U0PAM. I have told them." in coach.text
    finally:
        await channel.stop()
