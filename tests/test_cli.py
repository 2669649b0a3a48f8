"""The `kneecoach` command as a user runs it: help, bad configuration, migrate, and the
terminal chat driven by a script through stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BACKENDS, CLEAN_SCREEN

ROOT = Path(__file__).resolve().parents[1]


def kneecoach(*args: str, env: dict[str, str] | None = None, stdin: str = "",
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KNEECOACH_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin, text=True,
                          capture_output=True, env=full_env, cwd=cwd or ROOT, timeout=120)


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
