"""The `kneecoach` command: run the service, migrate the database."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Sequence

from bot.settings import Settings, SettingsError, load_settings
from conversations.clock import SystemClock
from conversations.engine import Engine
from conversations.program.data import Program, ProgramError, load_program
from storage.db import create_engine, is_sqlite, migrate, sessionmaker

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
    commands.add_parser("migrate", help="bring the database schema up to date")
    return parser


async def _engine_and_db(settings: Settings, program: Program) -> tuple[Engine, object]:
    database = create_engine(settings.database_url)
    if is_sqlite(settings.database_url):
        await migrate(database)  # the embedded default keeps itself up to date
    return Engine(sessionmaker(database), program, SystemClock()), database


async def _run(settings: Settings, program: Program, args: argparse.Namespace) -> int:
    from bot.channels.console import ConsoleChannel

    channel = args.channel or "console"
    if args.worker or channel != "console":
        print(f"kneecoach: the {'worker' if args.worker else channel} mode is not built yet",
              file=sys.stderr)
        return 2
    engine, database = await _engine_and_db(settings, program)
    try:
        await ConsoleChannel(engine, args.user or getpass.getuser()).run()
    finally:
        await database.dispose()  # type: ignore[attr-defined]
    return 0


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
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    try:
        return asyncio.run(_run(settings, program, args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
