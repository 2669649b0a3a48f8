"""Messages between patient and coach over the chat platforms, on SQLite and PostgreSQL: a
question and its reply through python-telegram-bot and the test Bot API server (answering 429
on the way) and through slack-bolt and the test Slack server, each arriving once and intact."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.channels.slack import SlackChannel
from bot.channels.telegram import TelegramChannel
from bot.sender import OutboxSender
from bot.settings import Settings
from conftest import CLEAN_SCREEN, telegram_settings
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.program.data import Program
from fake_api import free_port
from slack_server import BOT_TOKEN, SIGNING_SECRET, SlackPerson, SlackServer
from storage.models import Outbox
from telegram_server import BotApiServer, Person


async def drain(sender: OutboxSender, clock: ManualClock,
                sessions: async_sessionmaker[DbSession]) -> None:
    """Send everything queued, moving the clock past each retry-after."""
    for _ in range(10):
        await sender.drain()
        async with sessions() as db:
            if not await db.scalar(select(func.count()).select_from(Outbox)
                                   .where(Outbox.status == "pending")):
                return
        clock.advance(timedelta(seconds=30))
    raise AssertionError("the outbox did not empty")


async def test_a_question_and_its_reply_arrive_once_and_intact_over_telegram_despite_429(
        telegram_api: BotApiServer, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
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

        question = "\n".join(f"{n}: *bold* _it_ <b>tag</b> & `code` \U0001f9b5 [x](y) ~ #"
                             for n in range(120))  # over 4,000 characters, in one message
        assert len(question) > 4000
        await pam.say(f"/ask {question}")
        assert "Sent to your coach" in pam.text
        telegram_api.fail("sendMessage", times=1, status=429, retry_after=5)
        await drain(sender, clock, sessions)
        parts = [m for m in telegram_api.to(9002) if m.text.startswith("Message from")
                 or m.text[:1].isdigit()]
        assert "\n".join(m.text for m in parts) == (
            f"Message from Ann (telegram:3101):\n\n{question}")
        assert len(parts) == 2 and all(len(m.text) <= 4096 for m in parts)

        await coach.press("Reply", parts[-1])  # the button comes with the last part
        assert "Write your reply to Ann (telegram:3101)" in coach.text
        assert parts[-1].buttons == []  # taken off: it cannot be pressed twice
        answer = "Yes:\n\n1. *gently*\n2. _slowly_ <i>always</i> \U0001f44d"
        await coach.say(answer)
        assert "Sent to Ann (telegram:3101)." in coach.text
        telegram_api.fail("sendMessage", times=1, status=429, retry_after=5, chat="3101")
        await drain(sender, clock, sessions)
        received = [m for m in telegram_api.to(3101) if m.text.startswith("Message from")]
        assert [m.text for m in received] == [f"Message from your coach:\n\n{answer}"]
        assert list(received[0].tokens()) == ["Message my coach"]
        assert sum(c.status == 429 for c in telegram_api.calls) == 2
    finally:
        await channel.stop()


@pytest.fixture
async def slack_app(slack_api: SlackServer, sessions: async_sessionmaker[DbSession],
                    program: Program, clock: ManualClock) -> AsyncIterator[str]:
    """kneecoach's Slack app, with U0ADM as its admin; its /slack/events URL."""
    port = free_port()
    engine = Engine(sessions, program, clock, admins=frozenset({("slack", "U0ADM")}))
    channel = SlackChannel(Settings(  # type: ignore[arg-type]
        slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
        slack_api_url=f"{slack_api.root}/api/", listen=f"127.0.0.1:{port}"), engine)
    await channel.start()
    yield f"http://127.0.0.1:{port}/slack/events"
    await channel.stop()


async def test_a_question_and_its_reply_over_slack(
        slack_api: SlackServer, slack_app: str, sessions: async_sessionmaker[DbSession],
        clock: ManualClock) -> None:
    admin, coach, pam = (SlackPerson(slack_api, slack_app, u) for u in ("U0ADM", "U0COA",
                                                                        "U0PAM"))
    await coach.say("/start")
    await admin.say("/grant coach slack:U0COA")
    await coach.say("/invite")
    code = coach.text.split("Invite code: ")[1].split(" ")[0]
    await pam.say("/start")
    await pam.answer_all(*CLEAN_SCREEN)
    await pam.say(f"/join {code}")
    settings = Settings(slack_bot_token=BOT_TOKEN,  # type: ignore[arg-type]
                        slack_api_url=f"{slack_api.root}/api/")
    sender = OutboxSender(sessions, {"slack": SlackChannel.deliverer(settings)}, clock, rate=28)

    await pam.command("ask Is *this* <ok> & fine?\nTwo lines.")  # the slash command
    assert "Sent to your coach" in pam.text
    await drain(sender, clock, sessions)
    message = coach.question
    assert message.shown() == "Message from slack:U0PAM:\n\nIs *this* <ok> & fine?\nTwo lines."
    await coach.press("Reply", message)
    await coach.say("Yes _gently_.")
    assert "Sent to slack:U0PAM." in coach.text
    await drain(sender, clock, sessions)
    assert pam.question.shown() == "Message from your coach:\n\nYes _gently_."
