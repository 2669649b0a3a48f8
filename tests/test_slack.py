"""The Slack channel end to end: the bolt app on its own HTTP endpoint, signed requests as
Slack sends them, the test Web API server (tests/slack_server.py), the real engine, SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.channels.slack import SlackChannel
from bot.scheduler import Scheduler
from bot.sender import OutboxSender
from bot.settings import Settings
from conftest import CLEAN_SCREEN
from conversations.clock import ManualClock
from conversations.engine import STALE_BUTTON, Engine
from conversations.messages import Outbound
from conversations.program.data import Program
from conversations.program.screening import RED_FLAGS
from fake_api import free_port
from slack_server import BOT_TOKEN, SIGNING_SECRET, SlackPerson, SlackServer
from storage.models import ProcessedUpdate, User

ROOT = Path(__file__).resolve().parents[1]
FIRST_PROMPT_DELAY = timedelta(hours=23, seconds=10)  # clock fixture 14 Jan 08:00 -> 15 Jan 07:00


@pytest.fixture
async def slack_url(slack_api: SlackServer, engine: Engine) -> AsyncIterator[str]:
    """kneecoach's Slack app listening on 127.0.0.1; its /slack/events URL."""
    port = free_port()
    channel = SlackChannel(Settings(  # type: ignore[arg-type]
        slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
        slack_api_url=f"{slack_api.root}/api/", listen=f"127.0.0.1:{port}"), engine)
    await channel.start()
    yield f"http://127.0.0.1:{port}/slack/events"
    await channel.stop()


async def users(sessions: async_sessionmaker[DbSession]) -> int:
    async with sessions() as db:
        return await db.scalar(select(func.count()).select_from(User)) or 0


async def onboard(person: SlackPerson) -> None:
    await person.say("/start")
    await person.answer_all(*CLEAN_SCREEN)
    assert "All set" in person.text, person.text


async def test_onboarding_by_button_presses_in_a_direct_message(
        slack_api: SlackServer, slack_url: str, sessions: async_sessionmaker[DbSession]) -> None:
    ann = SlackPerson(slack_api, slack_url, "U0ANN")
    await ann.say("/start")
    assert "not a diagnosis" in ann.text.lower()
    consent = ann.question
    await ann.press("I agree")
    assert consent.buttons() == {}  # taken off, so it cannot be pressed twice
    assert "» I agree" in consent.shown()
    await ann.answer_all(*CLEAN_SCREEN[1:])
    assert "All set" in ann.text, ann.text
    await ann.command("today")  # the slash command, answered in the direct message
    assert "squeez" in ann.text.lower()
    home = slack_api.homes["U0ANN"][-1]["blocks"]
    assert any("Level 2" in b["text"]["text"] for b in home)
    async with sessions() as db:
        user = await db.scalar(select(User).filter_by(channel="slack", channel_user_id="U0ANN"))
    assert user is not None and user.status == "active" and user.chat_id == "DU0ANN"


async def test_the_red_flag_path(slack_api: SlackServer, slack_url: str,
                                 sessions: async_sessionmaker[DbSession]) -> None:
    bob = SlackPerson(slack_api, slack_url, "U0BOB")
    await bob.say("/start")
    await bob.answer_all("I agree", "Yes")
    assert "clinician" in bob.text.lower() or "doctor" in bob.text.lower()
    async with sessions() as db:
        user = await db.scalar(select(User).filter_by(channel_user_id="U0BOB"))
    assert user is not None and user.status == "referred"


async def test_a_stale_press_takes_the_buttons_off_and_keeps_the_text(
        slack_api: SlackServer, slack_url: str) -> None:
    """The engine retires a pressed keyboard; the adapter only renders it (an edit without
    text: the message as it read, without its buttons)."""
    ivy = SlackPerson(slack_api, slack_url, "U0IVY")
    await ivy.say("/start")
    consent = ivy.question
    await ivy.say("I agree")  # typed: the consent's buttons are still there
    shown = consent.shown()
    await ivy.press("I agree", consent)
    assert consent.buttons() == {} and consent.shown() == shown
    assert STALE_BUTTON in ivy.text


async def test_show_me_how_keeps_the_session_keyboard(
        slack_api: SlackServer, slack_url: str) -> None:
    """The engine leaves the session's keyboard live (the other exercises' buttons): the
    adapter took a pressed message's buttons off itself."""
    jo = SlackPerson(slack_api, slack_url, "U0JO")
    await onboard(jo)
    await jo.command("today")
    (session,) = [p for p in jo.new if p.shown().startswith("Today's session")]
    label = "Show me how: Straight leg raise with the foot turned out"
    await jo.press(label, session)
    assert label in session.buttons()
    assert "Straight leg raise with the foot turned out: 3 x 10" in jo.text


async def test_wrongly_signed_and_stale_requests_are_refused_and_not_handled(
        slack_api: SlackServer, slack_url: str, sessions: async_sessionmaker[DbSession]) -> None:
    cat = SlackPerson(slack_api, slack_url, "U0CAT")
    body = cat.message_body("/start")
    assert await cat.post(body, "application/json", secret="not-the-secret") == 401
    assert await cat.post(body, "application/json", timestamp=int(time.time()) - 6 * 60) == 401
    await cat.settle()
    assert slack_api.to(cat.channel) == [] and await users(sessions) == 0


@pytest.mark.parametrize("timestamp", ["abc", "²", "", "1e9", " 1", "9" * 40])
async def test_a_malformed_timestamp_is_unsigned_401_not_a_crash(
        slack_api: SlackServer, slack_url: str, sessions: async_sessionmaker[DbSession],
        timestamp: str, caplog: pytest.LogCaptureFixture) -> None:
    cat = SlackPerson(slack_api, slack_url, "U0CAT")
    assert await cat.post(cat.message_body("/start"), "application/json",
                          timestamp=timestamp) == 401
    await cat.settle()
    assert slack_api.to(cat.channel) == [] and await users(sessions) == 0
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_retried_event_is_handled_once(
        slack_api: SlackServer, slack_url: str, sessions: async_sessionmaker[DbSession]) -> None:
    dan = SlackPerson(slack_api, slack_url, "U0DAN")
    body = dan.message_body("/start", event_id="Ev0RETRIED")
    assert await dan.post(body, "application/json") == 200
    assert await dan.post(body, "application/json", retry=1) == 200  # Slack's retry
    await dan.settle()
    assert [p.shown().lower().count("not a diagnosis") for p in slack_api.to(dan.channel)] == [1]
    async with sessions() as db:
        assert await db.get(ProcessedUpdate, ("slack", "Ev0RETRIED")) is not None


async def test_a_429_storm_loses_no_reply(slack_api: SlackServer, slack_url: str) -> None:
    eve = SlackPerson(slack_api, slack_url, "U0EVE")
    slack_api.rate_limited = 2  # two answers of 429 with Retry-After: 1
    await eve.say("/start")
    assert "not a diagnosis" in eve.text.lower()
    assert [s for _, _, s in slack_api.calls].count(429) == 2
    await eve.press("I agree")
    assert eve.question.buttons().keys() >= {RED_FLAGS[0].yes, "No"}


async def test_a_daily_prompt_is_delivered_and_answered_by_its_buttons(
        slack_api: SlackServer, slack_url: str, sessions: async_sessionmaker[DbSession],
        program: Program, clock: ManualClock) -> None:
    fay = SlackPerson(slack_api, slack_url, "U0FAY")
    await onboard(fay)
    ticks = Scheduler(sessions, program, clock, grace=timedelta(minutes=180))
    settings = Settings(slack_bot_token=BOT_TOKEN,  # type: ignore[arg-type]
                        slack_api_url=f"{slack_api.root}/api/")
    sender = OutboxSender(sessions, {"slack": SlackChannel.deliverer(settings)}, clock, rate=28)
    clock.advance(FIRST_PROMPT_DELAY)
    assert (await ticks.tick()).prompts == 1
    await sender.drain()
    prompt = fay.question
    assert "Time for today's knee exercises" in prompt.shown()
    await fay.press("Done", prompt)
    await fay.answer_all("2")
    assert "Recorded: done, pain 2/10" in fay.text


async def test_progress_chart_and_data_export_are_uploaded_as_files(
        slack_api: SlackServer, slack_url: str) -> None:
    gus = SlackPerson(slack_api, slack_url, "U0GUS")
    await onboard(gus)
    await gus.say("/pain")
    await gus.answer_all("3")
    await gus.say("/progress")
    await gus.say("/mydata")
    names = {name: content for channel, name, content in slack_api.files
             if channel == gus.channel}
    assert names["kneecoach-chart.png"].startswith(b"\x89PNG")
    assert b"kneecoach-export" in names["kneecoach-mydata.json"]


async def test_a_wrong_slack_token_stops_start_up_with_one_line_and_exit_2(
        slack_api: SlackServer, tmp_path: Path) -> None:
    """bolt's async app checks the token only on the first request; kneecoach checks it with
    auth.test before it serves anyone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNEECOACH_")}
    env |= {"KNEECOACH_SLACK_BOT_TOKEN": "xoxb-wrong", "PYTHONPATH": str(ROOT),
            "KNEECOACH_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "KNEECOACH_SLACK_API_URL": f"{slack_api.root}/api/",
            "KNEECOACH_LISTEN": f"127.0.0.1:{free_port()}",
            "KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main(['run']))",
        env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = err.decode()
    assert "Traceback" not in stderr and process.returncode == 2, stderr
    (line,) = [n for n in stderr.splitlines() if n.startswith("kneecoach:")]
    assert "auth.test" in line and "invalid_auth" in line and "xoxb-wrong" not in line


async def test_long_slack_texts_split_by_utf16_length_with_no_empty_section(
        slack_api: SlackServer) -> None:
    deliverer = SlackChannel.deliverer(Settings(  # type: ignore[arg-type]
        slack_bot_token=BOT_TOKEN, slack_api_url=f"{slack_api.root}/api/"))
    emoji = "\U0001f9b5" * 2000  # 4,000 UTF-16 units: over a section's 3,000
    await deliverer.deliver(Outbound(channel="slack", chat_id="D1", text=emoji))
    await deliverer.deliver(Outbound(channel="slack", chat_id="D2",
                                     text="a" + " " * 9000 + "b"))
    (posted,) = slack_api.to("D1")
    assert "".join(b["text"]["text"] for b in posted.blocks) == emoji
    (spaced,) = slack_api.to("D2")
    assert [b["text"]["text"] for b in spaced.blocks] == ["a", "b"]


async def test_show_me_how_uploads_the_demonstration_gif(
        slack_api: SlackServer, slack_url: str) -> None:
    hal = SlackPerson(slack_api, slack_url, "U0HAL")
    await onboard(hal)
    await hal.say("/how clamshell")
    (gif,) = [(name, content) for channel, name, content in slack_api.files
              if channel == hal.channel]
    assert gif[0].startswith("clamshell-") and gif[0].endswith(".gif")
    assert gif[1].startswith(b"GIF89a")
    assert "Clamshell: 3 x 15" in hal.text
