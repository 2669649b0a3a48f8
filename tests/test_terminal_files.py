"""The terminal channel's files and the admin command line (issue 11): files per user, named
by user and time and removed by /delete and `kneecoach erase`; `erase` asks first and takes
the chat's user forms; `stats --help` and any Nd/Nw period; what git and docker leave out."""

from __future__ import annotations

import fnmatch
import io
import subprocess
from pathlib import Path

import pytest
from test_cli import kneecoach

from bot.channels.console import ConsoleChannel
from conftest import CLEAN_SCREEN
from conversations.engine import Engine

ROOT = Path(__file__).resolve().parents[1]


async def _chat(engine: Engine, user: str, lines: list[str], files: Path) -> str:
    out = io.StringIO()
    await ConsoleChannel(engine, user, stdin=io.StringIO("\n".join(lines) + "\n"), stdout=out,
                         files_dir=files).run()
    return out.getvalue()


async def test_files_go_to_a_per_user_folder_and_delete_removes_them(
        engine: Engine, tmp_path: Path) -> None:
    files = tmp_path / "kneecoach-files"
    journey = ["/start", *CLEAN_SCREEN, "/today", "Done", "3", "/progress", "/mydata",
               "/mydata"]
    await _chat(engine, "alice", journey, files)
    await _chat(engine, "bob", ["/start", "/mydata"], files)
    saved = sorted(p.name for p in (files / "alice").iterdir())
    # 14 January 2026 08:00 on the test clock; a second export in the same second is kept.
    assert saved == ["alice-chart-20260114-080000.png", "alice-mydata-20260114-080000-2.json",
                     "alice-mydata-20260114-080000.json"]
    assert sorted(p.name for p in files.iterdir()) == ["alice", "bob"]
    out = await _chat(engine, "alice", ["/delete", "DELETE"], files)
    assert "removed your saved files" in out
    assert sorted(p.name for p in files.iterdir()) == ["bob"]  # bob's are his own


@pytest.mark.parametrize("user,folder", [("../../evil", "_.._evil"), ("a/b", "a_b"),
                                         ("..", "user"), ("🦵", "_")])
async def test_a_user_name_cannot_leave_the_files_folder(engine: Engine, tmp_path: Path,
                                                         user: str, folder: str) -> None:
    files = tmp_path / "work" / "kneecoach-files"
    await _chat(engine, user, ["/start", "/mydata"], files)
    assert [p.name for p in files.iterdir()] == [folder]
    assert list((tmp_path / "work").iterdir()) == [files]


async def test_a_typed_number_at_the_time_question_is_an_hour_in_the_terminal(
        engine: Engine, tmp_path: Path) -> None:
    out = await _chat(engine, "alice", ["/start", *CLEAN_SCREEN[:-2], "5", "mon-fri"],
                      tmp_path)
    assert "07:00  08:00  12:00  18:00  20:00" in out  # times, not numbered
    assert "I will remind you on weekdays at 05:00" in out


def test_erase_asks_first_and_takes_a_terminal_name(tmp_path: Path) -> None:
    lines = ["/start", *CLEAN_SCREEN, "/mydata"]
    assert kneecoach("run", "--user", "bob", stdin="\n".join(lines) + "\n",
                     cwd=tmp_path).returncode == 0
    assert (tmp_path / "kneecoach-files" / "bob").is_dir()
    for answer in ("", "no\n", "y\n", "🦵\n"):
        kept = kneecoach("erase", "bob", stdin=answer, cwd=tmp_path)
        assert kept.returncode == 1 and "nothing erased" in kept.stderr
        assert "Erase everything held about console:bob?" in kept.stdout
    nobody = kneecoach("erase", "alice", "--yes", cwd=tmp_path)
    assert nobody.returncode == 1
    assert "console:alice" in nobody.stderr and "without a channel" in nobody.stderr
    for bad in ("", "fax:123", "telegram:", "x" * 500):
        refused = kneecoach("erase", bad, "--yes", cwd=tmp_path)
        assert refused.returncode == 2 and "telegram:123456" in refused.stderr
    erased = kneecoach("erase", "bob", "--yes", cwd=tmp_path)
    assert erased.returncode == 0 and "console:bob" in erased.stdout
    assert not (tmp_path / "kneecoach-files" / "bob").exists()
    again = kneecoach("run", "--user", "bob", stdin="/today\n", cwd=tmp_path)
    assert "Send /start to begin" in again.stdout


def test_stats_help_and_periods(tmp_path: Path) -> None:
    helped = kneecoach("stats", "--help", cwd=tmp_path)
    assert helped.returncode == 0
    for words in ("--since", "days or weeks", "12w", "'all'", "default: 30d", "--format",
                  "csv", "json", "table"):
        assert words in helped.stdout
    for good in ("45d", "2w", "1d", "ALL"):
        assert kneecoach("stats", "--since", good, cwd=tmp_path).returncode == 0
    for bad in ("0d", "0w", "7x", "", "🦵", "99999d", "-7d", "7"):
        result = kneecoach("stats", f"--since={bad}", cwd=tmp_path)
        assert result.returncode == 2 and "days or weeks" in result.stderr


def test_git_ignores_the_database_logs_and_the_terminals_files() -> None:
    paths = ["kneecoach.db", "kneecoach.db-wal", "kneecoach.log",
             "kneecoach-files/alice/alice-chart-20260114-080000.png"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.stdout.split() == paths


def _docker_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule, as far as this file uses it: a pattern matches the path
    or a folder above it; "**/" matches any number of folders."""
    parts = path.split("/")
    for pattern in patterns:
        heads = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        tails = ["/".join(parts[n:]) for n in range(len(parts))]
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(tail, pattern[3:]) for tail in tails):
                return True
        elif any(fnmatch.fnmatchcase(head, pattern) for head in heads):
            return True
    return False


def test_dockerignore_keeps_environments_databases_and_logs_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for kept_out in (".venv/bin/python", ".env", "kneecoach.db", "data/kneecoach.db-wal",
                     "kneecoach.log", "logs/kneecoach.log", "kneecoach-files/bob/x.json",
                     ".git/HEAD", "bot/__pycache__/cli.cpython-311.pyc"):
        assert _docker_excludes(kept_out, patterns), kept_out
    for needed in ("pyproject.toml", "README.md", "alembic.ini", "bot/cli.py",
                   "conversations/engine.py", "storage/migrations/env.py",
                   "conversations/program/program.toml"):
        assert not _docker_excludes(needed, patterns), needed
