"""Slack over Socket Mode: slack-bolt's aiohttp Socket Mode client against the test server's
WebSocket (tests/slack_server.py), the real engine and database. Envelopes are acknowledged by
envelope_id; a redelivered one is handled once; a reconnect in the middle loses nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.channels.slack import SlackChannel
from bot.settings import Settings
from conftest import CLEAN_SCREEN
from conversations.engine import Engine
from slack_server import APP_TOKEN, BOT_TOKEN, SlackServer, SocketPerson
from storage.models import User


@pytest.fixture
async def socket_app(slack_api: SlackServer, engine: Engine) -> AsyncIterator[SlackChannel]:
    """kneecoach's Slack app in Socket Mode: no signing secret, no port of its own."""
    channel = SlackChannel(Settings(  # type: ignore[arg-type]
        slack_bot_token=BOT_TOKEN, slack_app_token=APP_TOKEN,
        slack_api_url=f"{slack_api.root}/api/"), engine)
    await channel.start()
    await slack_api.wait_for(lambda: slack_api.socket is not None, 20)
    yield channel
    await channel.stop()


async def test_onboarding_by_button_presses_over_socket_mode(
        slack_api: SlackServer, socket_app: SlackChannel,
        sessions: async_sessionmaker[DbSession]) -> None:
    assert slack_api.called("apps.connections.open")  # with the app-level token
    ann = SocketPerson(slack_api, "U0ANN")
    await ann.say("/start")
    assert "not a diagnosis" in ann.text.lower()
    consent = ann.question
    await ann.press("I agree")
    assert consent.buttons() == {}  # taken off, so it cannot be pressed twice
    await ann.answer_all(*CLEAN_SCREEN[1:])
    assert "All set" in ann.text, ann.text
    await ann.command("today")  # a slash_commands envelope
    assert "squeez" in ann.text.lower()
    assert slack_api.unacked == {}
    async with sessions() as db:
        user = await db.scalar(select(User).filter_by(channel="slack", channel_user_id="U0ANN"))
    assert user is not None and user.status == "active"


async def test_a_redelivered_envelope_is_handled_once(
        slack_api: SlackServer, socket_app: SlackChannel) -> None:
    bea = SocketPerson(slack_api, "U0BEA")
    body = bea.message_body("/start", event_id="EvSAME1")
    for _ in range(2):  # Slack redelivers an event whose acknowledgement it missed
        assert await bea.post(body, "application/json") == 200
    await bea.settle()
    consent = [p for p in slack_api.to(bea.channel) if "not a diagnosis" in p.shown().lower()]
    assert len(consent) == 1
    press = bea.press_body("I agree")
    for _ in range(2):
        assert await bea.post(press, "application/x-www-form-urlencoded") == 200
    await bea.settle()
    # Handled once; and the answer shown in the pressed message stays (the redelivered press
    # used to put the message's stale copy back over it).
    assert consent[0].shown().endswith("» I agree") and consent[0].buttons() == {}
    assert len([p for p in slack_api.to(bea.channel) if p.buttons()]) == 1


async def test_a_reconnect_mid_conversation_loses_nothing(
        slack_api: SlackServer, socket_app: SlackChannel) -> None:
    """Slack asks the app to reconnect; the answer pushed meanwhile is handled once, on the
    old connection or redelivered on the new, and the journey ends as one without a
    reconnect does, message for message."""
    reference = SocketPerson(slack_api, "U0REF")
    await reference.say("/start")
    await reference.answer_all(*CLEAN_SCREEN)
    cy = SocketPerson(slack_api, "U0CY")
    await cy.say("/start")
    await cy.answer_all(*CLEAN_SCREEN[:10])
    await slack_api.disconnect()
    await cy.press(CLEAN_SCREEN[10])
    await slack_api.wait_for(lambda: len(slack_api.sockets) == 2, 30)
    await cy.answer_all(*CLEAN_SCREEN[11:])
    assert "All set" in cy.text, cy.text
    assert [p.shown() for p in slack_api.to(cy.channel)] == [
        p.shown() for p in slack_api.to(reference.channel)]
    assert slack_api.unacked == {} and slack_api.socket is slack_api.sockets[1]
