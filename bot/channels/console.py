"""The terminal channel: a person types (numbered buttons, prompts), or a script pipes lines
in and reads plain lines out when stdin is not a terminal."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from bot.files import write_private
from conversations.engine import Engine
from conversations.messages import Button, Inbound, Outbound


class ConsoleChannel:
    def __init__(self, engine: Engine, user_id: str, *, display_name: str = "",
                 stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 files_dir: Path | None = None) -> None:
        self.engine = engine
        self.user_id = user_id
        self.display_name = display_name or user_id
        self.stdin = stdin
        self.stdout = stdout
        self.files_dir = files_dir or Path.cwd()
        self.interactive = stdin.isatty()
        self._buttons: list[Button] = []

    async def run(self) -> None:
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
                self.render(outbound)

    def inbound(self, line: str) -> Inbound:
        """A line that names a button (its label, or its number) presses it."""
        pressed = self._pick(line.strip())
        if pressed is not None:
            return Inbound(channel="console", user_id=self.user_id, chat_id=self.user_id,
                           display_name=self.display_name, button=pressed.token)
        return Inbound.parse_text("console", self.user_id, self.user_id, line,
                                  display_name=self.display_name)

    def _pick(self, typed: str) -> Button | None:
        for button in self._buttons:
            if typed.lower() == button.label.lower():
                return button
        numeric_labels = any(b.label.isdigit() for b in self._buttons)
        if typed.isdigit() and not numeric_labels and 1 <= int(typed) <= len(self._buttons):
            return self._buttons[int(typed) - 1]
        return None

    def render(self, outbound: Outbound) -> None:
        if outbound.edit_message_id is not None:
            return  # a terminal cannot edit what it printed
        self._write(outbound.text)
        self._buttons = [b for row in outbound.buttons for b in row]
        if self._buttons:
            numeric = any(b.label.isdigit() for b in self._buttons)
            shown = ("  ".join(b.label for b in self._buttons) if numeric else
                     "  ".join(f"[{i}] {b.label}" for i, b in enumerate(self._buttons, 1)))
            self._write(shown)
        attachments: list[tuple[str, bytes]] = []
        if outbound.document is not None:
            attachments.append((outbound.document.filename, outbound.document.content))
        if outbound.image is not None:
            attachments.append(("kneecoach-chart.png", outbound.image))
        for name, content in attachments:
            path = self.files_dir / name
            write_private(path, content)
            self._write(f"(saved {path})")

    def _write(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()
