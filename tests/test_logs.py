"""Logs: quiet, JSON on request, and never a token, secret or a patient's typed text, at any
level. The real `kneecoach run` serves Telegram (polling) and Slack (HTTP) in one process with
DEBUG logging; the test greps everything it wrote."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import logs
from conftest import CLEAN_SCREEN
from fake_api import free_port
from slack_server import BOT_TOKEN, SIGNING_SECRET, SlackPerson, SlackServer
from telegram_server import TOKEN, BotApiServer, Person

ROOT = Path(__file__).resolve().parent.parent
TYPED = "my knee story is private zebra-quartz"  # typed where a button answer is asked


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """logs.setup replaces the root handlers; pytest's own come back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in (*logs.OURS, *logs.LIBRARIES)}
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


async def test_a_telegram_and_a_slack_journey_at_debug_log_no_secret_and_no_typed_text(
        telegram_api: BotApiServer, tmp_path: Path) -> None:
    slack_api = SlackServer()
    await slack_api.start()
    port = free_port()
    env = {**os.environ, "KNEECOACH_TELEGRAM_TOKEN": TOKEN,
           "KNEECOACH_TELEGRAM_API_URL": telegram_api.root,
           "KNEECOACH_SLACK_BOT_TOKEN": BOT_TOKEN, "KNEECOACH_SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "KNEECOACH_SLACK_API_URL": f"{slack_api.root}/api/",
           "KNEECOACH_LISTEN": f"127.0.0.1:{port}", "KNEECOACH_LOG_LEVEL": "DEBUG",
           "KNEECOACH_LOG_FORMAT": "json", "KNEECOACH_TICK_SECONDS": "1",
           "KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
           "PYTHONPATH": str(ROOT)}
    err = (tmp_path / "stderr").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main(['run']))",
        env=env, cwd=tmp_path, stderr=err)
    try:
        await telegram_api.wait_for(lambda: telegram_api.commands, within=30)
        ann = Person(telegram_api, 1101)
        await ann.say("/start")
        await ann.press("I agree")
        await ann.say(TYPED)  # not a button's label: re-asked, and must not be logged
        await ann.answer_all(*CLEAN_SCREEN[1:])
        assert "All set" in ann.text, ann.text

        url = f"http://127.0.0.1:{port}/slack/events"
        await slack_api.wait_for(lambda: _listening(port), 30)
        bea = SlackPerson(slack_api, url, "U0BEA")
        await bea.say("/start")
        await bea.say(TYPED)
        await bea.answer_all(*CLEAN_SCREEN)
        assert "All set" in bea.text, bea.text
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await slack_api.stop()
        err.close()
    written = (tmp_path / "stderr").read_text()
    lines = written.splitlines()
    assert lines, "DEBUG logging wrote nothing"
    for line in lines:  # every line one JSON object with the fields a log shipper reads
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= record.keys(), line
    for secret in (TOKEN, TOKEN.partition(":")[2], BOT_TOKEN, SIGNING_SECRET, TYPED, "London"):
        assert secret not in written, secret
    # Quiet: APScheduler's two lines per tick are gone (ticks ran every second meanwhile).
    assert "Running job" not in written and "executed successfully" not in written


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_redaction_covers_known_secrets_and_token_shapes(
        tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "kc.log"
    logs.setup("DEBUG", "text", ["s3cret-signing-key"], file=path)
    logging.getLogger("bot.x").info("key %s", "s3cret-signing-key")
    logging.getLogger("bot.x").info("GET http://api/bot987654321:AAH-other_token_0123456789/getMe")
    logging.getLogger("bot.x").info("slack xoxb-1-2-abc and xapp-1-A1-xyz")
    logging.getLogger("httpx").info("HTTP Request: POST http://api/bot1/getMe")  # below WARNING
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = path.read_text()
    assert written.count(logs.REDACTED) == 4, written
    for leak in ("s3cret", "AAH-other", "xoxb-1", "xapp-1", "HTTP Request"):
        assert leak not in written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_json_lines_carry_the_ids_of_the_update_being_handled(
        tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "kc.log"
    logs.setup("INFO", "json", [], file=path)
    with logs.handling("telegram", "1201", "77"):
        logging.getLogger("bot.x").warning("reply queued")
    logging.getLogger("bot.x").warning("outside")
    for handler in logging.getLogger().handlers:
        handler.flush()
    inside, outside = (json.loads(line) for line in path.read_text().splitlines())
    assert inside["message"] == "reply queued" and inside["level"] == "WARNING"
    assert (inside["channel"], inside["user_id"], inside["update_id"]) == ("telegram", "1201",
                                                                            "77")
    assert "update_id" not in outside and outside["logger"] == "bot.x"


def test_the_terminal_channel_logs_to_a_file_beside_the_database_not_the_screen(
        tmp_path: Path) -> None:
    db = tmp_path / "data" / "kc.db"
    db.parent.mkdir()
    env = {**os.environ, "KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
           "KNEECOACH_LOG_LEVEL": "DEBUG", "PYTHONPATH": str(ROOT)}
    for name in ("KNEECOACH_TELEGRAM_TOKEN", "KNEECOACH_SLACK_BOT_TOKEN"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main(sys.argv[1:]))",
         "run", "--user", "zoe"],
        input="/start\n", capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "not a diagnosis" in done.stdout
    log_file = db.parent / "kneecoach.log"
    assert log_file.exists() and stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert "kneecoach running: console" in log_file.read_text()
    assert "kneecoach running" not in done.stdout + done.stderr
