"""The Telegram channel end to end: python-telegram-bot over real HTTP against the test Bot
API server (tests/telegram_server.py), the real engine, SQLite and PostgreSQL. Nothing waits
on a timer for the bot: `Person` waits until the bot has finished each update."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.channels.telegram import TelegramChannel
from bot.delivery import send_replies, split_text
from bot.scheduler import Scheduler
from bot.sender import OutboxSender
from conftest import CLEAN_SCREEN, SIGNS_AT, WORST_AT, enrolled, telegram_settings
from conversations.clock import ManualClock
from conversations.commands import MENU
from conversations.engine import APOLOGY, PRIVATE_ONLY, STALE_BUTTON, Engine
from conversations.messages import Inbound, Outbound
from conversations.program.data import Program
from conversations.program.screening import RED_FLAGS
from fake_api import free_port
from storage.models import Outbox, ProgramState, User
from storage.repository import Repository
from telegram_server import TOKEN, BotApiServer, Fault, Person

ROOT = Path(__file__).resolve().parent.parent
FIRST_PROMPT_DELAY = timedelta(hours=23, seconds=10)  # clock fixture 14 Jan 08:00 -> 15 Jan 07:00


async def user_row(sessions: async_sessionmaker[DbSession], telegram_id: int) -> User | None:
    async with sessions() as db:
        return await db.scalar(select(User).where(User.channel == "telegram",
                                                  User.channel_user_id == str(telegram_id)))


async def count_users(sessions: async_sessionmaker[DbSession]) -> int:
    async with sessions() as db:
        return await db.scalar(select(func.count()).select_from(User)) or 0


async def onboard(person: Person) -> None:
    await person.say("/start")
    await person.answer_all(*CLEAN_SCREEN)
    assert "All set" in person.text, person.text


# --- the patient journey ---------------------------------------------------------------------
async def test_onboarding_by_presses_and_typed_answers(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    ann = Person(telegram_api, 1001)
    await ann.say("/start")
    assert "not a diagnosis" in ann.text.lower()
    consent = ann.question
    await ann.press("I agree")
    # The pressed keyboard is taken off and the answer shown in its place.
    assert consent.buttons == [] and consent.text.endswith("» I agree")
    await ann.answer_all(*CLEAN_SCREEN[1:])
    assert "All set" in ann.text, ann.text
    presses = [c for c in telegram_api.called("answerCallbackQuery")
               if c.params["callback_query_id"] in telegram_api.answered]
    assert len(telegram_api.answered) == len(presses)
    await ann.say("/today")
    assert "squeez" in ann.text.lower() and "foam" in ann.text.lower()
    user = await user_row(sessions, 1001)
    assert user is not None and user.status == "active" and user.display_name == "Ann"
    # Every callback_data the bot sent fits Telegram's 64 bytes.
    assert all(len(data.encode()) <= 64 for m in telegram_api.sent
               for data in m.tokens().values())


async def test_the_command_menu_and_the_invite_deep_link(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    assert [c["command"] for c in telegram_api.commands] == [name for name, _ in MENU]
    assert telegram_bot.engine.invite_links["telegram"] == (
        "https://t.me/kneecoach_test_bot?start={code}")


async def test_the_red_flag_path_refers_and_gives_no_program(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    bob = Person(telegram_api, 1002)
    await bob.say("/start")
    await bob.answer_all("I agree", "Yes")
    assert "clinician" in bob.text.lower() or "doctor" in bob.text.lower()
    await bob.say("/today")
    assert "squeez" not in bob.text.lower()
    user = await user_row(sessions, 1002)
    assert user is not None and user.status == "referred"


async def test_a_restart_mid_questionnaire_resumes_at_the_same_question(
        telegram_api: BotApiServer, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    first = TelegramChannel(telegram_settings(telegram_api),
                            Engine(sessions, program, clock), poll_timeout=1)
    await first.start()
    cat = Person(telegram_api, 1003)
    await cat.say("/start")
    await cat.answer_all(*CLEAN_SCREEN[:SIGNS_AT + 3])
    waiting = cat.question
    await first.stop()  # the process ends; a new one starts with nothing in memory

    second = TelegramChannel(telegram_settings(telegram_api),
                             Engine(sessions, program, clock), poll_timeout=1)
    await second.start()
    try:
        await cat.press("Yes", waiting)  # the keyboard from before the restart still works
        await cat.answer_all(*CLEAN_SCREEN[SIGNS_AT + 4:])
        assert "All set" in cat.text, cat.text
    finally:
        await second.stop()


async def test_progress_chart_and_my_data_arrive_as_photo_and_document(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel) -> None:
    dan = Person(telegram_api, 1004)
    await onboard(dan)
    await dan.say("/pain")
    await dan.answer_all("3")
    await dan.say("/progress")
    (photo,) = [m for m in dan.new if m.kind == "photo"]
    assert photo.content.startswith(b"\x89PNG\r\n\x1a\n")
    await dan.say("/mydata")
    (document,) = [m for m in dan.new if m.kind == "document"]
    exported = json.loads(document.content)
    assert document.filename.endswith(".json") and exported["schema"].startswith(
        "kneecoach-export")


# --- bad and odd input -----------------------------------------------------------------------
async def test_a_stale_button_from_an_old_message_is_refused_and_retired(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel) -> None:
    eve = Person(telegram_api, 1005)
    await eve.say("/start")
    await eve.answer_all(*CLEAN_SCREEN[:WORST_AT])
    pain_question = eve.question
    await eve.say("4")  # typed: the pain keyboard stays on screen
    next_question = eve.question
    assert pain_question.buttons and next_question is not pain_question
    await eve.press("7", pain_question)
    assert STALE_BUTTON in eve.text
    assert pain_question.buttons == []  # taken off so it cannot be pressed again
    assert eve.new[-1].text == next_question.text  # asked the same question again


async def test_forged_button_data_and_non_text_messages_get_a_clear_answer(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    fay = Person(telegram_api, 1006)
    await fay.say("/start")
    await fay.answer_all("I agree")
    question = fay.question
    await fay._act(lambda: telegram_api.press_data(1006, question, "onboarding|999|yes\U0001f600"))
    assert STALE_BUTTON in fay.text
    await fay._act(lambda: telegram_api.send_text(1006, None, sticker={  # type: ignore[arg-type]
        "file_id": "s", "file_unique_id": "s", "type": "regular", "width": 512,
        "height": 512, "is_animated": False, "is_video": False}))
    assert fay.new and fay.new[-1].text == question.text  # the same question, asked again
    user = await user_row(sessions, 1006)
    assert user is not None and user.status == "onboarding"


async def test_long_messages_are_split_at_line_ends_and_delivered_whole(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel) -> None:
    lines = [f"Line {n}: keep the knee over the second toe \U0001f9b5 *not* _markdown_"
             for n in range(150)]
    body = "\n".join(lines)
    assert len(body) > 2 * 4096
    await telegram_bot.deliverer.deliver(Outbound(channel="telegram", chat_id="1007", text=body))
    parts = telegram_api.to(1007)
    assert len(parts) == 3 and all(len(p.text) <= 4096 for p in parts)
    assert "\n".join(p.text for p in parts) == body
    assert split_text("x" * 5000, 4096) == ["x" * 4096, "x" * 904]
    assert split_text("", 4096) == [] and split_text("short", 4096) == ["short"]


async def test_a_message_in_a_group_is_not_handled_and_the_bot_says_so_once(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    group = Person(telegram_api, 1008, chat_id=-5001, chat_type="group")
    await group._act(lambda: telegram_api.added_to_group(1008, -5001))
    assert [m.text for m in group.new] == [PRIVATE_ONLY]
    await group.say("/start")
    await group.say("my knee hurts")
    assert group.new == [] and len(telegram_api.to(-5001)) == 1
    assert await count_users(sessions) == 0  # nothing stored about anyone in the group


async def test_the_group_notice_and_the_apology_are_in_the_users_language(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    telegram_api.languages[1011] = "de"
    group = Person(telegram_api, 1011, chat_id=-5002, chat_type="group")
    await group._act(lambda: telegram_api.added_to_group(1011, -5002))
    assert [m.text for m in group.new] == [
        "Ich spreche nur in privaten Chats, damit Ihre Gesundheitsdaten privat bleiben. Öffnen "
        "Sie einen Chat direkt mit mir, um zu beginnen."]
    telegram_api.languages[1012] = "es"
    eva = Person(telegram_api, 1012)
    await eva.say("/start")
    async with sessions() as db, db.begin():
        await db.execute(text("ALTER TABLE processed_updates RENAME TO processed_away"))
    try:
        await eva.say("Acepto")
        assert eva.text == ("Lo siento, algo ha fallado por mi parte. Inténtelo de nuevo en un "
                            "momento.")
    finally:
        async with sessions() as db, db.begin():
            await db.execute(text("ALTER TABLE processed_away RENAME TO processed_updates"))


async def test_a_failing_update_gets_an_apology_and_the_bot_keeps_running(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    gus = Person(telegram_api, 1009)
    await gus.say("/start")
    async with sessions() as db, db.begin():  # the database loses a table under the bot
        await db.execute(text("ALTER TABLE processed_updates RENAME TO processed_away"))
    try:
        await gus.say("I agree")
        assert gus.text == APOLOGY
    finally:
        async with sessions() as db, db.begin():
            await db.execute(text("ALTER TABLE processed_away RENAME TO processed_updates"))
    await gus.press("I agree")  # the consent question is still there, and now it works
    assert gus.question.tokens().keys() >= {RED_FLAGS[0].yes, "No"}


# --- webhook mode ----------------------------------------------------------------------------
@pytest.fixture
async def webhook_bot(telegram_api: BotApiServer, engine: Engine
                      ) -> AsyncIterator[TelegramChannel]:
    port = free_port()
    channel = TelegramChannel(telegram_settings(
        telegram_api, telegram_webhook_url=f"http://127.0.0.1:{port}/telegram/hook",
        listen=f"127.0.0.1:{port}"), engine)
    await channel.start()
    yield channel
    await channel.stop()


async def test_webhook_needs_the_secret_and_handles_a_redelivered_update_once(
        telegram_api: BotApiServer, webhook_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    hook = telegram_api.webhook
    assert hook["url"].endswith("/telegram/hook") and len(hook["secret_token"]) >= 32
    start = telegram_api.message_update(1010, "/start")
    assert await telegram_api.post_webhook(start, secret=None) == 403
    assert await telegram_api.post_webhook(start, secret="wrong") == 403
    hal = Person(telegram_api, 1010)
    await hal.settle()
    assert telegram_api.to(1010) == [] and await count_users(sessions) == 0

    for _ in range(2):  # Telegram retries a webhook delivery it thinks failed
        assert await telegram_api.post_webhook(start) == 200
    await hal.settle()
    consent = [m for m in telegram_api.to(1010) if "not a diagnosis" in m.text.lower()]
    assert len(consent) == 1
    await hal.press("I agree")
    assert hal.question.tokens().keys() >= {RED_FLAGS[0].yes, "No"}


# --- failures of the platform ----------------------------------------------------------------
async def test_429_and_500_during_onboarding_lose_no_reply(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel) -> None:
    ivy = Person(telegram_api, 1011)
    telegram_api.fail("sendMessage", times=1, status=429, retry_after=1)
    await ivy.say("/start")
    for n, answer in enumerate(CLEAN_SCREEN):
        if n % 12 == 0:
            telegram_api.fail("sendMessage", "editMessageText", times=2, status=500)
        await ivy.answer_all(answer)
    assert "All set" in ivy.text
    failed = Counter(c.status for c in telegram_api.calls if c.status != 200)
    assert failed[429] == 1 and failed[500] >= 4
    texts = [m.text for m in telegram_api.to(1011)]
    assert len(texts) == len(set(texts))  # nothing sent twice


async def test_a_reply_that_cannot_go_now_waits_in_the_outbox_and_is_sent_once(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    jay = Person(telegram_api, 1012)
    # Longer than a chat handler waits: the reply goes to the outbox.
    telegram_api.fail("sendMessage", times=1, status=429, retry_after=60)
    await jay.say("/start")
    assert jay.new == []
    sender = OutboxSender(sessions, {"telegram": telegram_bot.deliverer}, clock, rate=28)
    await sender.drain()
    (consent,) = telegram_api.to(1012)
    assert "not a diagnosis" in consent.text.lower() and consent.buttons
    async with sessions() as db:
        (row,) = (await db.scalars(select(Outbox))).all()
    assert (row.kind, row.status) == ("reply", "sent")
    await sender.drain()
    assert len(telegram_api.to(1012)) == 1


async def test_a_user_who_blocked_the_bot_is_unreachable_until_they_write_again(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    kim = Person(telegram_api, 1013)
    await onboard(kim)
    telegram_api.blocked.add("1013")
    ticks = Scheduler(sessions, program, clock, grace=timedelta(minutes=180))
    sender = OutboxSender(sessions, {"telegram": telegram_bot.deliverer}, clock, rate=28)
    clock.advance(FIRST_PROMPT_DELAY)
    assert (await ticks.tick()).prompts == 1
    await sender.drain()
    user = await user_row(sessions, 1013)
    assert user is not None and user.unreachable
    calls = len(telegram_api.calls)
    clock.advance(timedelta(days=1))
    assert (await ticks.tick()).prompts == 0  # not prompted again
    await sender.drain()
    assert len(telegram_api.calls) == calls

    telegram_api.blocked.discard("1013")  # unblocked, and writes again
    await kim.say("/today")
    user = await user_row(sessions, 1013)
    assert user is not None and not user.unreachable and "squeez" in kim.text.lower()


async def test_a_tick_delivers_due_prompts_whose_buttons_answer_the_session(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    lee = Person(telegram_api, 1014)
    await onboard(lee)
    ticks = Scheduler(sessions, program, clock, grace=timedelta(minutes=180))
    sender = OutboxSender(sessions, {"telegram": telegram_bot.deliverer}, clock, rate=28)
    clock.advance(FIRST_PROMPT_DELAY)
    await ticks.tick()
    await sender.drain()
    prompt = lee.question
    assert "Time for today's knee exercises" in prompt.text
    await lee.press("Done", prompt)
    assert prompt.buttons == []
    await lee.answer_all("2")
    assert "Recorded: done, pain 2/10" in lee.text


async def test_10_percent_injected_429_500_and_timeouts_lose_no_prompt(
        telegram_api: BotApiServer, engine: Engine, sessions: async_sessionmaker[DbSession],
        program: Program, clock: ManualClock) -> None:
    for n in range(40):
        await enrolled(engine, str(2000 + n), channel="telegram")
    rng = random.Random(7)

    def storm(method: str) -> Fault | None:
        if method != "sendMessage" or rng.random() >= 0.1:
            return None
        return rng.choice([Fault((), 1, status=429, retry_after=1), Fault((), 1, status=500),
                           Fault((), 1, delay=1.0)])

    telegram_api.random_fault = storm
    deliverer = TelegramChannel.deliverer(telegram_settings(telegram_api))
    ticks = Scheduler(sessions, program, clock, grace=timedelta(minutes=180))
    sender = OutboxSender(sessions, {"telegram": deliverer}, clock, rate=200, timeout=0.5)
    clock.advance(FIRST_PROMPT_DELAY)
    assert (await ticks.tick()).prompts == 40
    for _ in range(30):  # retries are due later: move the clock on and drain again
        await sender.drain()
        clock.advance(timedelta(minutes=10))
        async with sessions() as db:
            left = await db.scalar(select(func.count()).select_from(Outbox)
                                   .where(Outbox.status != "sent"))
        if not left:
            break
    assert left == 0
    prompts = Counter(m.chat_id for m in telegram_api.sent)
    assert sorted(prompts) == [str(2000 + n) for n in range(40)]
    faults = Counter(c.status for c in telegram_api.calls if c.status != 200)
    assert faults  # the storm happened
    # A timed-out request may still land on the server: that is the one accepted double.
    doubles = [chat for chat, count in prompts.items() if count > 1]
    slow = [c for c in telegram_api.calls if c.status == 200 and c.method == "sendMessage"]
    assert len(doubles) <= len(slow) - 40


# --- the process -----------------------------------------------------------------------------
async def test_kneecoach_run_with_a_token_serves_telegram_and_stops_cleanly_on_sigterm(
        telegram_api: BotApiServer, tmp_path: Path) -> None:
    env = {**os.environ, "KNEECOACH_TELEGRAM_TOKEN": TOKEN,
           "KNEECOACH_TELEGRAM_API_URL": telegram_api.root,
           "KNEECOACH_LISTEN": f"127.0.0.1:{free_port()}",  # /healthz is served in polling too
           "KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
           "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main(['run']))",
        env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE)
    try:
        await telegram_api.wait_for(lambda: telegram_api.commands, within=30)
        mia = Person(telegram_api, 1015)
        await mia.say("/start")
        assert "not a diagnosis" in mia.text.lower()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# --- coaches and admins over Telegram --------------------------------------------------------
async def test_roles_invites_and_a_10000_character_broadcast_over_telegram(
        telegram_api: BotApiServer, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    engine = Engine(sessions, program, clock, admins=frozenset({("telegram", "9001")}))
    channel = TelegramChannel(telegram_settings(telegram_api), engine, poll_timeout=1)
    await channel.start()
    try:
        admin, coach = Person(telegram_api, 9001), Person(telegram_api, 9002)
        mine, other = Person(telegram_api, 9003), Person(telegram_api, 9004)
        await coach.say("/start")
        await coach.say("/broadcast")  # not a coach yet: refused, by id
        assert "only for coaches" in coach.text
        await admin.say("/grant coach telegram:9002")
        assert "now a coach" in admin.text
        await coach.say("/invite")
        found = re.search(r"https://t\.me/kneecoach_test_bot\?start=([A-Z0-9]+)", coach.text)
        assert found, coach.text
        code = found.group(1)

        await mine.say(f"/start {code}")  # what Telegram sends when the link is opened
        await mine.answer_all(*CLEAN_SCREEN)
        assert "All set" in mine.text
        await onboard(other)  # no invite: not this coach's patient
        for command in ("/broadcast", "/patients", "/stats", "/grant coach telegram:9004"):
            await mine.say(command)
            assert "Sorry" in mine.text and "only for" in mine.text

        # Telegram clients cap a typed message at 4096 characters; the API may carry more
        # (from another client or a bridge), and the bot must still deliver it whole.
        body = "\n".join(f"{n}: *bold* _it_ [link](x) <b>tag</b> & `code` \U0001f9b5 ~ # | {{}}"
                         for n in range(200))[:10_000]
        await coach.say("/broadcast")
        await coach.say(body)
        assert "to 1 patient" in coach.question.text
        await coach.press("Send now")
        await OutboxSender(sessions, {"telegram": channel.deliverer}, clock, rate=28).drain()
        received = [m.text for m in telegram_api.to(9003)
                    if m.text.startswith("Message from your coach") or m.text[:1].isdigit()]
        assert "\n".join(received) == f"Message from your coach:\n\n{body}"
        assert len(received) == 3 and all(len(t) <= 4096 for t in received)
        assert not any("Message from your coach" in m.text for m in telegram_api.to(9004))
    finally:
        await channel.stop()


# --- several workers -------------------------------------------------------------------------
async def test_two_workers_claim_2000_due_prompts_and_telegram_gets_each_once(
        telegram_api: BotApiServer, database_url: str, sessions: async_sessionmaker[DbSession],
        second_sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    due = clock.now()
    async with sessions() as db, db.begin():  # enrolled straight into the tables: faster
        ids = (await db.scalars(insert(User).returning(User.id), [
            {"channel": "telegram", "channel_user_id": str(5000 + n), "chat_id": str(5000 + n),
             "status": "active", "timezone": "Europe/London", "reminder_time": "08:00",
             "reminder_days": "1234567", "unreachable": False, "created_at": due}
            for n in range(2000)])).all()
        await db.execute(insert(ProgramState), [
            {"user_id": uid, "level": 2, "started_on": due.date(), "baseline_worst_pain": 4,
             "next_prompt_at": due, "updated_at": due} for uid in ids])
    grace = timedelta(minutes=180)
    ticks = [Scheduler(s, program, clock, grace=grace, batch=150)
             for s in (sessions, second_sessions)]
    first, second = await asyncio.gather(*(t.tick() for t in ticks))
    assert first.prompts + second.prompts == 2000

    # Two worker processes, each with its own Bot and database pool, send at once.
    senders = [OutboxSender(s, {"telegram": TelegramChannel.deliverer(
        telegram_settings(telegram_api))}, clock, rate=500, ahead=0.25)
        for s in (sessions, second_sessions)]
    await asyncio.gather(*(s.drain() for s in senders))
    if database_url.startswith("postgresql"):  # SKIP LOCKED: both took a share at once
        assert all(s.stats["sent"] for s in senders)
    assert Counter(m.chat_id for m in telegram_api.sent) == {
        str(5000 + n): 1 for n in range(2000)}
    assert all("Time for today's knee exercises" in m.text for m in telegram_api.sent)


# --- holds (CLINICAL.md 5a, R9) over Telegram --------------------------------------------------
async def test_a_pain_pause_is_cleared_by_the_coach_from_the_request_over_telegram(
        telegram_api: BotApiServer, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    """Pain 8/10 during a session pauses the program; the coach's alert is written for the
    coach; the patient's /resume sends the coach a request whose button clears the hold, and
    the patient restarts a level lower."""
    engine = Engine(sessions, program, clock, admins=frozenset({("telegram", "9001")}))
    channel = TelegramChannel(telegram_settings(telegram_api), engine, poll_timeout=1)
    await channel.start()
    sender = OutboxSender(sessions, {"telegram": channel.deliverer}, clock, rate=28)
    try:
        admin, coach, pam = (Person(telegram_api, n) for n in (9001, 9002, 3101))
        await coach.say("/start")
        await admin.say("/grant coach telegram:9002")
        await coach.say("/invite")
        code = re.search(r"start=([A-Z0-9]+)", coach.text).group(1)  # type: ignore[union-attr]
        await pam.say(f"/start {code}")
        await pam.answer_all(*CLEAN_SCREEN)
        assert "All set" in pam.text
        await pam.say("/today")
        await pam.press("Done")
        await pam.press("8")
        assert "paused your program" in pam.text
        await sender.drain()
        assert telegram_api.to(9002)[-1].text == (
            "Ann (telegram:3101) reported pain 8/10 during the session; their program is "
            "paused until you clear it (/clear telegram:3101).")

        await pam.say("/resume")
        assert "until your coach clears it" in pam.text
        await sender.drain()
        request = telegram_api.to(9002)[-1]
        assert request.text.startswith("Ann (telegram:3101) asks to resume.")
        assert (await user_row(sessions, 3101)).status == "referred"  # type: ignore[union-attr]

        await coach.press("Clear, restart at level 1", request)
        assert "they restart at level 1" in coach.text
        assert request.buttons == []  # the request's keyboard is retired
        await coach.say("/clear telegram:3101")
        assert "no hold to clear" in coach.text
        await sender.drain()
        assert "restart at level 1" in telegram_api.to(3101)[-1].text
        user = await user_row(sessions, 3101)
        assert user is not None and user.status == "active"
        async with sessions() as db:
            state = await db.get(ProgramState, user.id)
        assert state is not None and state.level == 1 and state.next_prompt_at is not None
    finally:
        await channel.stop()


# --- a reply is a sequence of parts (issue 13) -----------------------------------------------
async def drain_until_settled(sender: OutboxSender, clock: ManualClock,
                              sessions: async_sessionmaker[DbSession], rounds: int = 12) -> None:
    """Drain the outbox, moving the clock past each backoff, until no row is pending."""
    for _ in range(rounds):
        await sender.drain()
        async with sessions() as db:
            if not await db.scalar(select(func.count()).select_from(Outbox)
                                   .where(Outbox.status == "pending")):
                return
        clock.advance(timedelta(hours=1))


async def test_a_reply_failing_at_its_file_or_chart_resumes_there_and_sends_its_text_once(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """/mydata with sendDocument answering 500 sent its text 8 times: the whole message was
    retried in place and again from the outbox. Now each part goes once; the rest resumes."""
    noa = Person(telegram_api, 1101)
    await onboard(noa)
    await noa.say("/pain")
    await noa.answer_all("3")
    telegram_api.fail("sendPhoto", times=2, status=500)  # retried in place, from the chart
    await noa.say("/progress")
    assert [m.kind for m in noa.new].count("photo") == 1
    assert len(noa.new) == len({m.text for m in noa.new if m.kind == "text"}) + 1

    telegram_api.fail("sendDocument", times=6, status=500)  # beyond the in-place retries
    await noa.say("/mydata")
    await drain_until_settled(OutboxSender(sessions, {"telegram": telegram_bot.deliverer},
                                           clock, rate=28), clock, sessions)
    mine = telegram_api.to(1101)
    assert sum("Here is everything I hold" in m.text for m in mine) == 1
    assert [m.kind for m in mine].count("document") == 1
    assert len(telegram_api.called("sendDocument")) == 1
    async with sessions() as db:
        (row,) = (await db.scalars(select(Outbox).where(Outbox.kind == "reply"))).all()
    assert (row.status, row.parts_sent) == ("sent", 1)


async def test_a_long_text_failing_part_way_resumes_at_its_first_unsent_part(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel, engine: Engine,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    body = "\n".join(f"Line {n}: keep the knee over the second toe" for n in range(300))
    assert len(split_text(body, 4096)) == 4
    telegram_api.fail("sendMessage", times=8, status=500, after=1)  # part 2 keeps failing
    await send_replies(telegram_bot.deliverer, engine,
                       Inbound(channel="telegram", user_id="1102", chat_id="1102", text="x",
                               update_id="77"),
                       [Outbound(channel="telegram", chat_id="1102", text=body)], behind=False)
    assert len(telegram_api.to(1102)) == 1  # the first part went; the rest waits in the outbox
    await drain_until_settled(OutboxSender(sessions, {"telegram": telegram_bot.deliverer},
                                           clock, rate=28), clock, sessions)
    assert "\n".join(m.text for m in telegram_api.to(1102)) == body  # each part once, in order


async def test_a_malformed_api_answer_queues_the_rest_of_the_reply_instead_of_dropping_it(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    ola = Person(telegram_api, 1103)
    await onboard(ola)
    telegram_api.fail("sendDocument", times=1, malformed=True)
    await ola.say("/mydata")
    assert APOLOGY not in ola.text and "Here is everything I hold" in ola.text
    assert not [m for m in ola.new if m.kind == "document"]
    await drain_until_settled(OutboxSender(sessions, {"telegram": telegram_bot.deliverer},
                                           clock, rate=28), clock, sessions)
    mine = telegram_api.to(1103)
    assert [m.kind for m in mine].count("document") == 1
    assert sum("Here is everything I hold" in m.text for m in mine) == 1


# --- a chat's order across retries (issue 13) ------------------------------------------------
async def queue(sessions: async_sessionmaker[DbSession], clock: ManualClock, chat: str,
                *texts: str) -> None:
    async with sessions() as db, db.begin():
        for text_ in texts:
            await Repository(db).enqueue(
                user_id=None, channel="telegram", chat_id=chat, kind="alert", now=clock.now(),
                payload=Outbound(channel="telegram", chat_id=chat, text=text_).model_dump(
                    mode="json"))


async def test_a_later_message_waits_while_an_earlier_one_to_the_chat_is_retried(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    await queue(sessions, clock, "1104", "first", "second")
    await queue(sessions, clock, "1105", "other chat")
    sender = OutboxSender(sessions, {"telegram": telegram_bot.deliverer}, clock, rate=28)
    telegram_api.fail("sendMessage", times=2, status=500, chat="1104")
    await sender.drain()
    assert telegram_api.to(1104) == [] and len(telegram_api.to(1105)) == 1  # others go on
    # A reply to the chat meanwhile queues behind too, rather than overtaking.
    pia = Person(telegram_api, 1104)
    await pia.say("/help")
    assert pia.new == []
    await drain_until_settled(sender, clock, sessions)
    texts = [m.text for m in telegram_api.to(1104)]
    assert texts[:2] == ["first", "second"] and len(texts) == 3


async def test_after_the_final_failure_the_earlier_message_is_failed_and_later_ones_go(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    await queue(sessions, clock, "1106", "doomed", "next")
    telegram_api.fail("sendMessage", times=3, status=500, chat="1106")
    sender = OutboxSender(sessions, {"telegram": telegram_bot.deliverer}, clock, rate=28,
                          max_attempts=3)
    await drain_until_settled(sender, clock, sessions)
    assert [m.text for m in telegram_api.to(1106)] == ["next"]
    async with sessions() as db:
        rows_ = (await db.scalars(select(Outbox).order_by(Outbox.id))).all()
    assert [(r.status, r.attempts) for r in rows_] == [("failed", 3), ("sent", 0)]


# --- long texts split by UTF-16 length (issue 18) --------------------------------------------
async def test_long_texts_split_by_utf16_length_at_whitespace_with_no_empty_part(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel) -> None:
    emoji = "\U0001f9b5" * 3000  # 3,000 characters, 6,000 UTF-16 units
    await telegram_bot.deliverer.deliver(Outbound(channel="telegram", chat_id="1107",
                                                  text=emoji))
    assert "".join(m.text for m in telegram_api.to(1107)) == emoji
    spaced = "a" + " " * 9000 + "b"
    await telegram_bot.deliverer.deliver(Outbound(channel="telegram", chat_id="1108",
                                                  text=spaced))
    assert [m.text for m in telegram_api.to(1108)] == ["a", "b"]
    for text_ in (emoji, spaced, " \n " * 5000, "x" * 9000, "é\u0301" * 4000):
        parts = split_text(text_, 4096)
        assert all(p.strip() and len(p.encode("utf-16-le")) // 2 <= 4096 for p in parts)
        assert "".join(parts).replace(" ", "").replace("\n", "") == (
            text_.replace(" ", "").replace("\n", ""))


# --- start-up (issue 13) ---------------------------------------------------------------------
async def run_cli(tmp_path: Path, env: dict[str, str], within: float = 60) -> tuple[int, str]:
    """`kneecoach run` as a subprocess (its exit code and stderr), while this test's servers
    keep answering."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("KNEECOACH_")}
    full |= {"KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
             "PYTHONPATH": str(ROOT), **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main(['run']))",
        env=full, cwd=tmp_path, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(process.communicate(), within)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, err.decode()


def the_line(stderr: str) -> str:
    """The one line kneecoach printed about why it stopped (no traceback around it)."""
    assert "Traceback" not in stderr, stderr
    (line,) = [n for n in stderr.splitlines() if n.startswith("kneecoach:")]
    return line


async def test_a_wrong_token_stops_start_up_with_one_line_and_exit_2(
        telegram_api: BotApiServer, tmp_path: Path) -> None:
    code, err = await run_cli(tmp_path, {"KNEECOACH_TELEGRAM_TOKEN": "123456:WRONG-token",
                                         "KNEECOACH_TELEGRAM_API_URL": telegram_api.root})
    line = the_line(err)
    assert code == 2 and "getMe" in line and "401" in line and "WRONG" not in line


@pytest.mark.parametrize("failing", ["getMe answers 500", "unreachable"])
async def test_an_api_that_does_not_answer_is_retried_then_exit_1_with_one_line(
        telegram_api: BotApiServer, tmp_path: Path, failing: str) -> None:
    telegram_api.fail("getMe", times=10_000, status=500)
    url = telegram_api.root if failing != "unreachable" else f"http://127.0.0.1:{free_port()}"
    code, err = await run_cli(tmp_path, {"KNEECOACH_TELEGRAM_TOKEN": TOKEN,
                                         "KNEECOACH_TELEGRAM_API_URL": url,
                                         "KNEECOACH_STARTUP_SECONDS": "2"})
    line = the_line(err)
    assert code == 1 and "getMe" in line
    if failing != "unreachable":
        assert "Internal Server Error" in line
        assert len([c for c in telegram_api.calls if c.method == "getMe"]) >= 2  # retried


async def test_start_up_rides_out_a_few_failing_calls_and_goes_on_without_the_menu(
        telegram_api: BotApiServer, engine: Engine) -> None:
    telegram_api.fail("getMe", times=2, status=500)
    telegram_api.fail("setMyCommands", times=10_000, status=502)
    channel = TelegramChannel(telegram_settings(telegram_api), engine, poll_timeout=1)
    await channel.start()
    try:
        qua = Person(telegram_api, 1109)
        await qua.say("/start")
        assert "not a diagnosis" in qua.text.lower()
        assert telegram_api.commands == []
    finally:
        await channel.stop()


# --- polling confirms an update only once it is handled (issue 18) ---------------------------
async def test_updates_fetched_but_not_handled_when_killed_are_answered_after_a_restart(
        telegram_api: BotApiServer, tmp_path: Path) -> None:
    env = {**os.environ, "KNEECOACH_TELEGRAM_TOKEN": TOKEN,
           "KNEECOACH_TELEGRAM_API_URL": telegram_api.root,
           "KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
           "PYTHONPATH": str(ROOT)}

    async def start() -> asyncio.subprocess.Process:
        telegram_api.commands = []
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main(['run']))",
            env=env, cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL)
        await telegram_api.wait_for(lambda: telegram_api.commands, within=30)
        return process

    first = await start()
    try:
        telegram_api.fail("sendMessage", times=1, delay=10)  # the first reply hangs
        ids = [(await telegram_api.send_text(1110, text))["update_id"]
               for text in ("/start", "/help", "/today")]
        await telegram_api.wait_for(lambda: set(ids) <= telegram_api.handed_out.keys()
                                    and not telegram_api.succeeded["sendMessage"]
                                    and any(c.method == "sendMessage" for c in telegram_api.calls),
                                    within=30)
        first.kill()  # kill -9, in the middle of the first reply
        await first.wait()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    telegram_api.faults.clear()
    second = await start()
    try:
        rae = Person(telegram_api, 1110)
        await rae.settle(within=30)
        said = "\n".join(m.text for m in telegram_api.to(1110))
        assert "/progress" in said  # the help, listing the commands
        assert len(telegram_api.to(1110)) >= 2  # and the answer to /today
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()


async def test_each_part_is_recorded_as_it_goes_so_a_hang_part_way_resends_none(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    body = "\n".join(f"Line {n}: roll the outer thigh slowly" for n in range(400))
    first, *rest = split_text(body, 4096)
    await queue(sessions, clock, "1111", body)
    telegram_api.fail("sendMessage", times=1, after=1, status=500, delay=1.0)
    sender = OutboxSender(sessions, {"telegram": telegram_bot.deliverer}, clock, rate=28,
                          timeout=0.5)  # the second part outlasts the sender's patience
    await drain_until_settled(sender, clock, sessions)
    texts = [m.text for m in telegram_api.to(1111)]
    assert texts == [first, *rest]
    async with sessions() as db:
        (row,) = (await db.scalars(select(Outbox))).all()
    assert (row.status, row.attempts) == ("sent", 1)
