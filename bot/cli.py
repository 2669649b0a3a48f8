"""The `kneecoach` command: run the service, migrate the database."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from bot import channels as registry
from bot import logs
from bot.channels import Channel, StartupError
from bot.channels.console import FILES_DIR, TERMINAL, ConsoleChannel, remove_files
from bot.delivery import Deliverer, close_all
from bot.settings import Settings, SettingsError, load_settings
from conversations import i18n
from conversations.clock import Clock, SystemClock
from conversations.demo import DemoCache
from conversations.engine import Engine
from conversations.flows.staff import set_coach, user_ref
from conversations.flows.statistics import MAX_PERIOD_DAYS, period_of, render
from conversations.i18n import N_, _, ngettext
from conversations.messages import storable
from conversations.program.data import Program, ProgramError, load_program
from storage import crypto
from storage.crypto import UndecryptableData
from storage.db import (
    create_engine,
    database_lost,
    is_sqlite,
    migrate,
    missing_directory,
    ping,
    reason,
    sessionmaker,
)
from storage.models import Base, display_id
from storage.repository import Repository
from storage.stats import compute

log = logging.getLogger("kneecoach")
# Logs are for operators and stay in English; the command's own words are in the
# KNEECOACH_DEFAULT_LANGUAGE of the one who runs it.
PLAIN = N_("KNEECOACH_ENCRYPTION_KEYS is not set: health data is stored in plain text")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kneecoach",
        description=_("A coaching chatbot for knee-cap (patellofemoral) pain. Not a diagnosis "
                      "and not a replacement for a clinician."))
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help=_("start the bot (the terminal chat when no token is "
                                            "set)"))
    run.add_argument("--channel", choices=registry.names(),
                     help=_("which channel to run; default: every one whose token is set, "
                            "else the terminal"))
    run.add_argument("--worker", action="store_true",
                     help=_("run only the scheduler tick and the sender, no chat"))
    run.add_argument("--user", default=None, type=_user_name,
                     help=_("terminal channel: who you are (default: your login name)"))
    run.add_argument("--log-file", type=Path, default=None,
                     help=_("terminal channel: where logs go (default: kneecoach.log beside "
                            "the database), never onto the chat's screen"))
    commands.add_parser("migrate", help=_("bring the database schema up to date"))
    for verb, said in (("grant", _("grant the coach role (admins' command line)")),
                       ("revoke", _("revoke the coach role (admins' command line)"))):
        role = commands.add_parser(verb, help=said)
        role.add_argument("role", choices=("coach",))
        role.add_argument("user", help=_(USER_HELP))
    stats = commands.add_parser(
        "stats", help=_("adherence and outcome statistics"),
        description=_("Adherence and outcome statistics, for everyone and per coach."))
    stats.add_argument("--since", type=_since, default="30d", metavar="PERIOD",
                       help=_("how far back to count: a number of days or weeks (7d, 30d, "
                              "12w) or 'all'; default: 30d"))
    stats.add_argument("--format", choices=("table", "csv", "json"), default="table",
                       help=_("table (for reading, the default), csv (for a spreadsheet) or "
                              "json (for a program)"))
    erase = commands.add_parser(
        "erase", help=_("erase everything held about a patient (a written erasure request)"),
        description=_("Erase everything held about a patient, and their terminal files. Asks "
                      "for confirmation unless --yes is given."))
    erase.add_argument("user", help=_(USER_HELP))
    erase.add_argument("--yes", action="store_true",
                       help=_("erase without asking for confirmation"))
    commands.add_parser("rotate-key", help=_("re-encrypt all health data with the first key of "
                                             "KNEECOACH_ENCRYPTION_KEYS"))
    return parser


def _user_name(value: str) -> str:
    """A terminal user is an id like any channel's: 1 to 64 characters."""
    if not 0 < len(value) <= 64 or storable(value) != value:
        raise argparse.ArgumentTypeError(_("a name of 1 to 64 characters"))
    return value


def _beside_database(url: str) -> Path:
    """kneecoach.log in the SQLite file's folder (the working directory for PostgreSQL)."""
    path = url.partition(":///")[2].partition("?")[0] if is_sqlite(url) else ""
    return (Path(path).parent if path and path != ":memory:" else Path()) / "kneecoach.log"


USER_HELP = N_("channel:user id, e.g. telegram:123456 or slack:U0ABC; a bare name is a "
               "terminal user (bob means console:bob)")


def _since(text: str) -> tuple[str, int | None]:
    period = period_of(text)
    if period is None:
        raise argparse.ArgumentTypeError(_(
            "{text} is not a period: use a number of days or weeks (7d, 30d, 12w, up to {most} "
            "days) or 'all'", text=repr(text[:20]), most=MAX_PERIOD_DAYS))
    return period


def _confirm(user: str) -> bool:
    """Ask on the terminal (or read one line from a script) before erasing."""
    print(_("Erase everything held about {user}? This cannot be undone. Type 'yes' to "
            "confirm: ", user=user), end="", flush=True)
    return sys.stdin.readline().strip().lower() == "yes"


def _channels(settings: Settings, chosen: str | None) -> list[str]:
    """The channels to run: the one asked for, else every one whose token is set, else the
    terminal."""
    if chosen:
        return [chosen]
    return settings.chats or [TERMINAL]


async def _run(settings: Settings, program: Program, args: argparse.Namespace) -> int:
    channels = _channels(settings, args.channel)
    missing = [variable for variable in map(settings.missing, channels) if variable]
    if missing:
        print("kneecoach: " + _("{name} is not set", name=missing[0]), file=sys.stderr)
        return 2
    if not settings.keys:
        log.warning(PLAIN)
        if channels == [TERMINAL] and not args.worker:  # its log is a file: say it once here
            print("kneecoach: " + _("WARNING: {warning}", warning=_(PLAIN)), file=sys.stderr)
    database = await _database(settings)
    sessions = sessionmaker(database)
    clock = SystemClock()
    demos = DemoCache(settings.demo_dir)
    engine = Engine(sessions, program, clock, settings.admin_ids, demos=demos,
                    default_language=settings.default_language)
    # The demonstrations not yet on disk are drawn in the background, so a first "Show me
    # how" finds them ready (a fraction of a second each, once per program version).
    drawn = threading.Event()
    warming = None if args.worker else asyncio.create_task(
        asyncio.to_thread(demos.warm, program, drawn))
    try:
        if channels == [TERMINAL] and not args.worker:
            log.info("kneecoach running: %s", TERMINAL)
            await ConsoleChannel(engine, (args.user or getpass.getuser())[:64]).run()
        else:
            await _serve(settings, sessions, program, engine, clock,
                         [] if args.worker else channels)
    except StartupError as exc:  # a platform refused or did not answer: one line, no trace
        print(f"kneecoach: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        drawn.set()  # stop drawing: what is missing is drawn when first asked for
        if warming is not None:
            await warming
        await database.dispose()
    return 0


async def _serve(settings: Settings, sessions: async_sessionmaker[DbSession], program: Program,
                 engine: Engine, clock: SystemClock, channels: list[str]) -> None:
    """`serve` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, sessions, program, engine, clock, channels, stop)


async def serve(settings: Settings, sessions: async_sessionmaker[DbSession], program: Program,
                engine: Engine, clock: Clock, channels: list[str], stop: asyncio.Event) -> None:
    """Chat channels, the scheduler and sender, and the one web server (webhooks, Slack
    events, /healthz, /metrics), until `stop` is set."""
    from bot.metrics import Heartbeat
    from bot.scheduler import run_worker
    from bot.web import WebServer

    heartbeat = Heartbeat(clock)
    server = WebServer(*settings.listen_host_port, sessions=sessions, heartbeat=heartbeat,
                       tick_seconds=settings.tick_seconds)
    deliverers: dict[str, Deliverer] = {
        name: registry.served(name).deliverer(settings, sessions) for name in settings.chats}
    chats = [registry.served(name)(settings, engine, server=server) for name in channels]
    try:  # routes are all added: the router is frozen from here
        await server.start()
    except OSError as exc:
        raise StartupError(_("cannot listen on {listen} (KNEECOACH_LISTEN): {reason}",
                             listen=settings.listen, reason=exc.strerror), 1) from None
    try:
        started: list[Channel] = []
        try:  # every channel is up (or start-up fails) before any work begins
            for chat in chats:
                await chat.start()
                started.append(chat)
        except StartupError:
            for chat in started:
                await chat.stop()
            raise
        log.info("kneecoach running: %s", ", ".join(channels) or "worker only")
        await asyncio.gather(run_worker(settings, sessions, program, deliverers, clock, stop,
                                        heartbeat),
                             *(_until(chat, stop) for chat in started))
    finally:
        await close_all(deliverers.values())
        await server.stop()


async def _until(channel: Channel, stop: asyncio.Event) -> None:
    """Serve a started chat channel until `stop` is set, then let it finish what it has in
    hand."""
    try:
        await stop.wait()
    finally:
        await channel.stop()


async def _admin(settings: Settings, args: argparse.Namespace) -> int:
    """The admin commands of the command line, each in one transaction."""
    database = await _database(settings)
    try:
        async with sessionmaker(database)() as db, db.begin():
            repo = Repository(db)
            now = SystemClock().now()
            if args.command == "stats":
                days = args.since[1]
                today = now.date()
                since = None if days is None else today - timedelta(days=days - 1)
                print(render(await compute(db, since, today), args.format))
                return 0
            ref = user_ref(args.user, TERMINAL)  # the command line is a terminal
            if ref is None or ref[0] not in registry.names():
                print("kneecoach: " + _("{user} is not a user: give channel:id, e.g. "
                                        "telegram:123456, or a terminal name (bob means "
                                        "console:bob)", user=repr(args.user[:80])),
                      file=sys.stderr)
                return 2
            channel, user_id = ref
            name = display_id(channel, user_id)
            user = await repo.user(channel, user_id)
            if user is None:
                bare = ":" not in args.user
                print("kneecoach: " + _("nobody with the id {name} has started the bot",
                                        name=name) +
                      (" " + _("({user} without a channel means the terminal user {name}; "
                               "for another channel give e.g. telegram:123456)",
                               user=args.user, name=name) if bare else ""),
                      file=sys.stderr)
                return 1
            if args.command == "erase":
                if not args.yes and not _confirm(name):
                    print("kneecoach: " + _("nothing erased"), file=sys.stderr)
                    return 1
                await repo.erase_user(user.id)
                repo.audit("command line", "erasure", now, channel=channel)
                if channel == TERMINAL:
                    remove_files(Path.cwd() / FILES_DIR, user_id)
                print("kneecoach: " + _("erased everything held about {name}", name=name))
                return 0
            said = await set_coach(repo, user, args.command == "grant", "command line", now)
            print(f"kneecoach: {said}")
            return 0
    finally:
        await database.dispose()


async def _database(settings: Settings) -> AsyncEngine:
    """The engine, its schema brought up to date on SQLite (the embedded default keeps itself
    up to date), and its stored health data found readable with the configured keys."""
    database = create_engine(settings.database_url, settings.keys)
    try:
        if is_sqlite(settings.database_url):
            await migrate(database)
        else:
            await ping(database)  # unreachable at start: one line and exit 1 (see main)
        async with sessionmaker(database)() as db:
            await crypto.check(db, Base.metadata.sorted_tables)
    except BaseException:
        await database.dispose()
        raise
    return database


async def _rotate_key(settings: Settings) -> int:
    if not settings.keys:
        print("kneecoach: " + _("{name} is not set", name="KNEECOACH_ENCRYPTION_KEYS"),
              file=sys.stderr)
        return 2
    database = await _database(settings)
    try:
        async with sessionmaker(database)() as db:
            written = await crypto.rotate(db, Base.metadata.sorted_tables)
    finally:
        await database.dispose()
    print("kneecoach: " + ngettext(
        "{n} stored value is encrypted with the first key; the others can be removed from "
        "KNEECOACH_ENCRYPTION_KEYS",
        "{n} stored values are encrypted with the first key; the others can be removed from "
        "KNEECOACH_ENCRYPTION_KEYS", written))
    return 0


async def _migrate(settings: Settings) -> int:
    database = create_engine(settings.database_url, settings.keys)
    try:
        await migrate(database)
    finally:
        await database.dispose()
    print("kneecoach: " + _("database schema is up to date"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # Read before the settings are: the help and the usage errors come first.
    with i18n.speaking(i18n.pick(os.environ.get("KNEECOACH_DEFAULT_LANGUAGE"))):
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        program = load_program(settings.program_file)
    except (SettingsError, ProgramError) as exc:
        print(f"kneecoach: {exc}", file=sys.stderr)
        return 2
    folder = missing_directory(settings.database_url)
    if folder is not None:
        print("kneecoach: " + _("cannot reach the database {url}: there is no directory "
                                "{folder}", url=settings.database_url, folder=folder),
              file=sys.stderr)
        return 1
    console = args.command == "run" and not args.worker and _channels(
        settings, args.channel) == [TERMINAL]
    logs.setup(settings.log_level, settings.log_format, settings.secrets,
               file=(args.log_file or _beside_database(settings.database_url)) if console
               else None)
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "rotate-key":
            return asyncio.run(_rotate_key(settings))
        if args.command in ("grant", "revoke", "stats", "erase"):
            return asyncio.run(_admin(settings, args))
        # What start-up built (the libraries, the program) lives until the exit: frozen, the
        # interpreter's last collections skip it, which took seconds of a SIGTERM's teardown.
        gc.freeze()
        try:
            return asyncio.run(_run(settings, program, args))
        except KeyboardInterrupt:
            return 0
    except UndecryptableData as exc:
        print(f"kneecoach: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # Once running, every loop waits a lost database out; before that, and in the
        # one-shot commands, it is one clear line and exit 1.
        if not database_lost(exc):
            raise
        url = make_url(settings.database_url).render_as_string(hide_password=True)
        print("kneecoach: " + _("cannot reach the database {url}: {reason}", url=url,
                                reason=reason(exc)), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
