"""The `kneecoach` command: run the service, migrate the database."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot import logs
from bot.delivery import Deliverer
from bot.settings import Settings, SettingsError, load_settings
from conversations.clock import SystemClock
from conversations.engine import Engine
from conversations.flows.staff import PERIODS, render
from conversations.program.data import Program, ProgramError, load_program
from storage.db import create_engine, is_sqlite, migrate, sessionmaker
from storage.repository import Repository
from storage.stats import compute

if TYPE_CHECKING:  # imported when served: the terminal chat starts without them
    from bot.channels.slack import SlackChannel
    from bot.channels.telegram import TelegramChannel

log = logging.getLogger("kneecoach")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kneecoach",
        description="A coaching chatbot for knee-cap (patellofemoral) pain. Not a diagnosis "
                    "and not a replacement for a clinician.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the bot (the terminal chat when no token is set)")
    run.add_argument("--channel", choices=("console", "telegram", "slack"),
                     help="which channel to run; default: every one whose token is set, else "
                          "the terminal")
    run.add_argument("--worker", action="store_true",
                     help="run only the scheduler tick and the sender, no chat")
    run.add_argument("--user", default=None,
                     help="terminal channel: who you are (default: your login name)")
    run.add_argument("--log-file", type=Path, default=None,
                     help="terminal channel: where logs go (default: kneecoach.log beside the "
                          "database), never onto the chat's screen")
    commands.add_parser("migrate", help="bring the database schema up to date")
    for verb in ("grant", "revoke"):
        role = commands.add_parser(verb, help=f"{verb} the coach role (admins' command line)")
        role.add_argument("role", choices=("coach",))
        role.add_argument("user", help="channel:user id, e.g. telegram:123456")
    stats = commands.add_parser("stats", help="adherence and outcome statistics")
    stats.add_argument("--since", choices=tuple(PERIODS), default="30d")
    stats.add_argument("--format", choices=("table", "csv", "json"), default="table")
    erase = commands.add_parser(
        "erase", help="erase everything held about a patient (a written erasure request)")
    erase.add_argument("user", help="channel:user id, e.g. telegram:123456")
    return parser


def _beside_database(url: str) -> Path:
    """kneecoach.log in the SQLite file's folder (the working directory for PostgreSQL)."""
    path = url.partition(":///")[2].partition("?")[0] if is_sqlite(url) else ""
    return (Path(path).parent if path and path != ":memory:" else Path()) / "kneecoach.log"


def _channels(settings: Settings, chosen: str | None) -> list[str]:
    """The channels to run: the one asked for, else every one whose token is set, else the
    terminal."""
    if chosen:
        return [chosen]
    found = [name for name, token in (("telegram", settings.telegram_token),
                                      ("slack", settings.slack_bot_token)) if token]
    return found or ["console"]


async def _run(settings: Settings, program: Program, args: argparse.Namespace) -> int:
    channels = _channels(settings, args.channel)
    missing = [variable for channel, variable, value in (
        ("telegram", "KNEECOACH_TELEGRAM_TOKEN", settings.telegram_token),
        ("slack", "KNEECOACH_SLACK_BOT_TOKEN", settings.slack_bot_token),
        ("slack", "KNEECOACH_SLACK_SIGNING_SECRET (or KNEECOACH_SLACK_APP_TOKEN)",
         settings.slack_signing_secret or settings.slack_app_token))
        if channel in channels and not value]
    if missing:
        print(f"kneecoach: {missing[0]} is not set", file=sys.stderr)
        return 2
    database = create_engine(settings.database_url)
    if is_sqlite(settings.database_url):
        await migrate(database)  # the embedded default keeps itself up to date
    sessions = sessionmaker(database)
    clock = SystemClock()
    engine = Engine(sessions, program, clock, settings.admin_ids)
    try:
        if channels == ["console"] and not args.worker:
            from bot.channels.console import ConsoleChannel

            log.info("kneecoach running: console")
            await ConsoleChannel(engine, args.user or getpass.getuser()).run()
        else:
            await _serve(settings, sessions, program, engine, clock,
                         [] if args.worker else channels)
    finally:
        await database.dispose()
    return 0


async def _serve(settings: Settings, sessions: async_sessionmaker[DbSession], program: Program,
                 engine: Engine, clock: SystemClock, channels: list[str]) -> None:
    """Chat channels plus the scheduler and sender, until SIGTERM or SIGINT."""
    from bot.channels.slack import SlackChannel
    from bot.channels.telegram import TelegramChannel
    from bot.scheduler import run_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    deliverers: dict[str, Deliverer] = {}
    if settings.telegram_token:
        deliverers["telegram"] = TelegramChannel.deliverer(settings)
    if settings.slack_bot_token:
        deliverers["slack"] = SlackChannel.deliverer(settings)
    tasks = [run_worker(settings, sessions, program, deliverers, clock, stop)]
    if "telegram" in channels:
        tasks.append(_until(TelegramChannel(settings, engine), stop))
    if "slack" in channels:
        tasks.append(_until(SlackChannel(settings, engine), stop))
    log.info("kneecoach running: %s", ", ".join(channels) or "worker only")
    await asyncio.gather(*tasks)


async def _until(channel: TelegramChannel | SlackChannel, stop: asyncio.Event) -> None:
    """Serve a chat channel until `stop` is set, then let it finish what it has in hand."""
    await channel.start()
    try:
        await stop.wait()
    finally:
        await channel.stop()


async def _admin(settings: Settings, args: argparse.Namespace) -> int:
    """The admin commands of the command line, each in one transaction."""
    database = create_engine(settings.database_url)
    if is_sqlite(settings.database_url):
        await migrate(database)
    try:
        async with sessionmaker(database)() as db, db.begin():
            repo = Repository(db)
            now = SystemClock().now()
            if args.command == "stats":
                days = PERIODS[args.since]
                today = now.date()
                since = None if days is None else today - timedelta(days=days - 1)
                print(render(await compute(db, since, today), args.format))
                return 0
            channel, _, user_id = args.user.partition(":")
            user = await repo.user(channel, user_id)
            if user is None:
                print(f"kneecoach: nobody with the id {args.user} has started the bot",
                      file=sys.stderr)
                return 1
            if args.command == "erase":
                await repo.erase_user(user.id)
                repo.audit("command line", "erasure", now, channel=channel)
                print(f"kneecoach: erased everything held about {args.user}")
                return 0
            user.role = "coach" if args.command == "grant" else "patient"
            if args.command == "grant" and user.status == "pending":
                user.status = "staff"
            repo.audit("command line", f"{args.command}_coach", now, target=args.user)
            print(f"kneecoach: {args.user} is "
                  f"{'now a coach' if args.command == 'grant' else 'no longer a coach'}")
            return 0
    finally:
        await database.dispose()


async def _migrate(settings: Settings) -> int:
    database = create_engine(settings.database_url)
    try:
        await migrate(database)
    finally:
        await database.dispose()
    print("kneecoach: database schema is up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        program = load_program(settings.program_file)
    except (SettingsError, ProgramError) as exc:
        print(f"kneecoach: {exc}", file=sys.stderr)
        return 2
    console = args.command == "run" and not args.worker and _channels(
        settings, args.channel) == ["console"]
    logs.setup(settings.log_level, settings.log_format, settings.secrets,
               file=(args.log_file or _beside_database(settings.database_url)) if console
               else None)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command in ("grant", "revoke", "stats", "erase"):
        return asyncio.run(_admin(settings, args))
    try:
        return asyncio.run(_run(settings, program, args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
