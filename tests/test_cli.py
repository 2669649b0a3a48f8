"""The `kneecoach` command as a user runs it: help, bad configuration, migrate, and the
terminal chat driven by a script through stdin."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import logs
from bot.cli import main
from conftest import BACKENDS, CLEAN_SCREEN

ROOT = Path(__file__).resolve().parents[1]


def kneecoach(*args: str, env: dict[str, str] | None = None, stdin: str = "",
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`kneecoach ARGS` as its console script runs it (`bot.cli:main`), in this process: the
    command gets its own environment (no KNEECOACH_* of ours), working folder and standard
    streams, an uncaught exception is a traceback on stderr and exit 1 as the interpreter
    makes it, and what the command set up for its process (logging, frozen objects) is put
    back afterwards. A subprocess per call cost over a second of interpreter start-up each."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    saved_levels = {name: logging.getLogger(name).level
                    for name in ("", *logs.LIBRARIES, *logs.OURS)}
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update({k: v for k, v in saved_env.items() if not k.startswith("KNEECOACH_")})
    os.environ.update(env or {})
    os.chdir(cwd or ROOT)
    try:
        with (contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
              _stdin(stdin)):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's --help and usage errors
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        gc.unfreeze()
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["kneecoach", *args], code, out.getvalue(),
                                       err.getvalue())


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def test_help_lists_the_commands() -> None:
    result = kneecoach("--help")
    assert result.returncode == 0
    for word in ("run", "migrate", "Not a diagnosis"):
        assert word in result.stdout


@pytest.mark.parametrize("variable,value", [
    ("KNEECOACH_DATABASE_URL", "mysql://nope"),
    ("KNEECOACH_TICK_SECONDS", "soon"),
    ("KNEECOACH_LISTEN", "8080"),
    ("KNEECOACH_ADMINS", "alice"),
    ("KNEECOACH_LOG_LEVEL", "LOUD"),
])
def test_bad_setting_names_the_variable_and_exits_2(tmp_path: Path, variable: str,
                                                    value: str) -> None:
    result = kneecoach("migrate", env={variable: value}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0]


def test_bad_program_file_names_file_field_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "program.toml"
    bad.write_text('version = "x"\nexercises = []\nlevels = []\n')
    result = kneecoach("migrate", env={"KNEECOACH_PROGRAM_FILE": str(bad)}, cwd=tmp_path)
    assert result.returncode == 2
    assert str(bad) in result.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrate(backend: str, tmp_path: Path, postgres_database: str | None) -> None:
    url = (f"sqlite+aiosqlite:///{tmp_path / 'k.db'}" if backend == "sqlite"
           else str(postgres_database))
    result = kneecoach("migrate", env={"KNEECOACH_DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_terminal_chat_journey_from_a_script(tmp_path: Path) -> None:
    """The README's first command ends in `kneecoach run`: with no token and stdin a pipe, a
    script can go through the whole journey on the default SQLite file."""
    lines = ["/start", *CLEAN_SCREEN, "/today", "Done", "7", "/progress", "/mydata"]
    result = kneecoach("run", "--user", "alice", stdin="\n".join(lines) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "not a diagnosis" in out and "[1] I agree" in out
    assert "All set" in out and "Today's session (level 2)" in out
    assert "level 1" in out.split("Today's session (level 2)")[1]  # pain 7 regressed
    assert "Level 1 of 5" in out
    assert (tmp_path / "kneecoach.db").exists()
    saved = sorted(p.name for p in (tmp_path / "kneecoach-files" / "alice").iterdir())
    assert [name.split("-")[:2] for name in saved] == [["alice", "chart"], ["alice", "mydata"]]
    assert not (tmp_path / "kneecoach-mydata.json").exists()
    # A second person on the same database starts from the beginning.
    other = kneecoach("run", "--user", "bob", stdin="/today\n", cwd=tmp_path)
    assert "Send /start to begin" in other.stdout


def test_admin_command_line_grant_stats_erase(tmp_path: Path) -> None:
    """`kneecoach grant`, `stats` and `erase` on the same database the chat uses."""
    lines = ["/start", *CLEAN_SCREEN, "/today", "Done", "3"]
    assert kneecoach("run", "--user", "alice", stdin="\n".join(lines) + "\n",
                     cwd=tmp_path).returncode == 0
    assert kneecoach("run", "--user", "bob", stdin="/start\n", cwd=tmp_path).returncode == 0
    granted = kneecoach("grant", "coach", "console:bob", cwd=tmp_path)
    assert granted.returncode == 0 and "now a coach" in granted.stdout
    missing = kneecoach("grant", "coach", "console:nobody", cwd=tmp_path)
    assert missing.returncode == 1 and "nobody" in missing.stderr
    table = kneecoach("stats", "--since", "7d", cwd=tmp_path)
    assert table.returncode == 0
    header, everyone = table.stdout.splitlines()[:2]
    assert header.split()[:3] == ["group", "enrolled", "new"]
    assert everyone.split()[:2] == ["all", "1"]
    as_json = kneecoach("stats", "--since", "all", "--format", "json", cwd=tmp_path)
    assert json.loads(as_json.stdout)[0]["done"] == 1
    as_csv = kneecoach("stats", "--format", "csv", cwd=tmp_path)
    assert as_csv.stdout.startswith("group,enrolled,new,")
    bad = kneecoach("stats", "--since", "forever", cwd=tmp_path)
    assert bad.returncode == 2
    erased = kneecoach("erase", "console:alice", stdin="yes\n", cwd=tmp_path)
    assert erased.returncode == 0 and "Type 'yes' to confirm" in erased.stdout
    after = kneecoach("stats", "--since", "all", "--format", "json", cwd=tmp_path)
    assert json.loads(after.stdout)[0]["enrolled"] == 0
    again = kneecoach("run", "--user", "alice", stdin="/today\n", cwd=tmp_path)
    assert "Send /start to begin" in again.stdout


@pytest.mark.parametrize("channel,env,missing", [
    ("telegram", {}, "KNEECOACH_TELEGRAM_TOKEN"),
    ("slack", {}, "KNEECOACH_SLACK_BOT_TOKEN"),
    ("slack", {"KNEECOACH_SLACK_BOT_TOKEN": "xoxb-1"}, "KNEECOACH_SLACK_SIGNING_SECRET"),
])
def test_a_channel_without_its_credentials_says_which_and_exits_2(
        tmp_path: Path, channel: str, env: dict[str, str], missing: str) -> None:
    result = kneecoach("run", "--channel", channel, env=env, cwd=tmp_path)
    assert result.returncode == 2 and missing in result.stderr


def test_command_line_revoke_detaches_the_patients_as_the_chat_does(tmp_path: Path) -> None:
    assert kneecoach("run", "--user", "bob", stdin="/start\n", cwd=tmp_path).returncode == 0
    assert kneecoach("grant", "coach", "console:bob", cwd=tmp_path).returncode == 0
    invite = kneecoach("run", "--user", "bob", stdin="/invite\n", cwd=tmp_path).stdout
    code = invite.split("Invite code: ")[1].split(" ")[0]
    lines = ["/start", *CLEAN_SCREEN, f"/join {code}"]
    joined = kneecoach("run", "--user", "alice", stdin="\n".join(lines) + "\n", cwd=tmp_path)
    assert "now connected" in joined.stdout
    revoked = kneecoach("revoke", "coach", "console:bob", cwd=tmp_path)
    assert revoked.returncode == 0
    assert "1 patient is now without a coach: console:alice" in revoked.stdout
    again = kneecoach("run", "--user", "carol", stdin="\n".join(lines) + "\n", cwd=tmp_path)
    assert "unknown, revoked or expired" in again.stdout


@pytest.mark.parametrize("name", ["x" * 65, ""])
def test_a_bad_terminal_user_name_is_one_clear_error(tmp_path: Path, name: str) -> None:
    result = kneecoach("run", "--user", name, stdin="/start\n", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "1 to 64 characters" in result.stderr
    assert kneecoach("run", "--user", "x" * 64, stdin="/start\n", cwd=tmp_path).returncode == 0


def test_the_command_line_speaks_the_default_language(tmp_path: Path) -> None:
    """The operator's own words follow KNEECOACH_DEFAULT_LANGUAGE: help, usage errors,
    results and refusals (logs stay English, for operators)."""
    def words(text: str) -> str:
        return " ".join(text.split())  # argparse wraps help at the terminal's width

    helped = kneecoach("stats", "--help", env={"KNEECOACH_DEFAULT_LANGUAGE": "es"}, cwd=tmp_path)
    assert helped.returncode == 0
    assert "cuánto tiempo atrás contar: un número de días o semanas" in words(helped.stdout)
    bad = kneecoach("stats", "--since=7x", env={"KNEECOACH_DEFAULT_LANGUAGE": "de"},
                    cwd=tmp_path)
    assert bad.returncode == 2 and "ist kein Zeitraum" in words(bad.stderr)
    done = kneecoach("migrate", env={"KNEECOACH_DEFAULT_LANGUAGE": "de"}, cwd=tmp_path)
    assert done.returncode == 0 and "das Datenbankschema ist aktuell" in done.stdout
    nobody = kneecoach("erase", "alice", "--yes", env={"KNEECOACH_DEFAULT_LANGUAGE": "es"},
                       cwd=tmp_path)
    assert nobody.returncode == 1
    assert "nadie con el id console:alice ha iniciado el bot" in words(nobody.stderr)
    english = kneecoach("migrate", cwd=tmp_path)
    assert "database schema is up to date" in english.stdout
