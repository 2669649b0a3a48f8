"""The terminal channel: a person types (numbered buttons, prompts), or a script pipes lines
in and reads plain lines out when stdin is not a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
from pathlib import Path
from typing import TextIO

from bot.delivery import Progress
from bot.files import write_private
from conversations.engine import Engine
from conversations.messages import Button, Inbound, Outbound
from conversations.numbers import whole

TERMINAL = "console"  # the channel's name: the terminal is the one chat that needs no token
FILES_DIR = "kneecoach-files"  # in the working folder: one folder per terminal user below it
# Labels typed as they read: a number or a time ("5", "07:00") is never a button's position.
_AS_TYPED = re.compile(r"^\d{1,2}(?::\d{2})?$", re.ASCII)


def user_folder(base: Path, user_id: str) -> Path:
    """The folder of one terminal user's files; the name is made safe for a path."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", user_id).strip(".") or "user"
    return base / safe


def remove_files(base: Path, user_id: str) -> bool:
    """Remove a terminal user's saved files (their data is erased); True if there were any."""
    folder = user_folder(base, user_id)
    if not folder.is_dir():
        return False
    shutil.rmtree(folder)
    return True


class ConsoleChannel:
    """One person at the terminal; it renders its replies itself (it is its own deliverer),
    and scheduled messages are not sent to it."""

    name = channel = TERMINAL

    def __init__(self, engine: Engine, user_id: str, *, display_name: str = "",
                 stdin: TextIO | None = None, stdout: TextIO | None = None,
                 files_dir: Path | None = None) -> None:
        self.engine = engine
        self.user_id = user_id
        self.display_name = display_name or user_id
        # The process's streams as they are when the chat starts, not when this was imported.
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.files_dir = files_dir or Path.cwd() / FILES_DIR
        self.interactive = self.stdin.isatty()
        self._buttons: list[Button] = []
        self.deliverer = self
        self._reading: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Chat until the input ends (Ctrl-D, or the end of a script)."""
        await self.start()
        try:
            await self.closed()
        finally:
            await self.stop()

    async def start(self) -> None:
        """Read the terminal in a task of its own."""
        self._reading = asyncio.create_task(self._read())

    async def closed(self) -> None:
        """Return once the input has ended."""
        if self._reading is not None:
            await asyncio.shield(self._reading)

    async def stop(self) -> None:
        """Stop reading (a line in hand is dropped, its transaction rolled back)."""
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading

    async def deliver(self, outbound: Outbound, start: int = 0,
                      progress: Progress | None = None) -> str | None:
        self.render(outbound)
        return None

    async def _read(self) -> None:
        if self.interactive:
            self._write(f"kneecoach in the terminal, as user '{self.user_id}'. Type /start to "
                        "begin, /help for commands, Ctrl-D to quit.")
        loop = asyncio.get_running_loop()
        while True:
            if self.interactive:
                self.stdout.write("> ")
                self.stdout.flush()
            line = await loop.run_in_executor(None, self.stdin.readline)
            if not line:
                return
            for outbound in await self.engine.handle(self.inbound(line.rstrip("\r\n"))):
                await self.deliver(outbound)

    def inbound(self, line: str) -> Inbound:
        """A line that names a button (its label, or its number) presses it."""
        pressed = self._pick(line.strip())
        if pressed is not None:
            return Inbound(channel=TERMINAL, user_id=self.user_id, chat_id=self.user_id,
                           display_name=self.display_name, button=pressed.token)
        return Inbound.parse_text(TERMINAL, self.user_id, self.user_id, line,
                                  display_name=self.display_name)

    def _pick(self, typed: str) -> Button | None:
        for button in self._buttons:
            if typed.lower() == button.label.lower():
                return button
        number = None if self._as_typed() else whole(typed, 1, len(self._buttons))
        return None if number is None else self._buttons[number - 1]

    def render(self, outbound: Outbound) -> None:
        if outbound.edit_message_id is not None:
            return  # a terminal cannot edit what it printed
        self._write(outbound.text)
        folder = user_folder(self.files_dir, self.user_id)
        if outbound.forget and remove_files(self.files_dir, self.user_id):
            self._write(f"(removed your saved files in {folder})")
        self._buttons = [b for row in outbound.buttons for b in row]
        if self._buttons:
            shown = ("  ".join(b.label for b in self._buttons) if self._as_typed() else
                     "  ".join(f"[{i}] {b.label}" for i, b in enumerate(self._buttons, 1)))
            self._write(shown)
        attachments: list[tuple[str, bytes]] = []
        if outbound.document is not None:
            attachments.append((outbound.document.filename, outbound.document.content))
        if outbound.image is not None:
            attachments.append(("kneecoach-chart.png", outbound.image))
        if outbound.media is not None:  # a demonstration: open the file to watch it
            self._write(f"(see {outbound.media.path})")
        for name, content in attachments:
            path = self._file_path(name)
            write_private(path, content)
            self._write(f"(saved {path})")

    def _as_typed(self) -> bool:
        return any(_AS_TYPED.match(b.label) for b in self._buttons)

    def _file_path(self, name: str) -> Path:
        """kneecoach-files/USER/USER-mydata-20260114-080000.json: whose, what and when."""
        folder = user_folder(self.files_dir, self.user_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # its names are the user's too
        stem, dot, suffix = name.removeprefix("kneecoach-").rpartition(".")
        stamp = self.engine.clock.now().strftime("%Y%m%d-%H%M%S")
        path = folder / f"{folder.name}-{stem}-{stamp}{dot}{suffix}"
        n = 1
        while path.exists():  # two files of one kind in the same second
            n += 1
            path = folder / f"{folder.name}-{stem}-{stamp}-{n}{dot}{suffix}"
        return path

    def _write(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()


CHANNEL = ConsoleChannel
