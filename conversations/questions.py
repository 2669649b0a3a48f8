"""A question a flow asks, and how a typed answer or a button press becomes its value."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from conversations.i18n import N_, _
from conversations.messages import Button, ButtonToken
from conversations.numbers import whole

Parser = Callable[[str], str | None]


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class Question:
    text: str
    choices: tuple[Choice, ...] = ()
    # For typed answers that are not one of the choices; returns the value or None.
    parse: Parser | None = None
    hint: str = field(default_factory=lambda: _("Please pick one of the buttons."))
    columns: int = 2
    extra: tuple[str, ...] = field(default=())  # notes shown under the question
    # Free text kept as written (case, line breaks): `parse` gets it only stripped.
    raw: bool = False

    def buttons(self, step: str, version: int) -> tuple[tuple[Button, ...], ...]:
        made = [Button(label=c.label, token=ButtonToken(step=step, ref=version,
                                                        value=c.value).encode())
                for c in self.choices]
        return tuple(tuple(made[i:i + self.columns]) for i in range(0, len(made), self.columns))

    def read_text(self, text: str) -> str | None:
        """The value a typed answer stands for, or None if it is not an answer to this."""
        typed = " ".join(text.split()).lower()
        if not typed:
            return None
        if self.raw and self.parse:
            return self.parse(text.strip())
        for choice in self.choices:
            if typed == choice.label.lower():
                return choice.value
        return self.parse(typed) if self.parse else None

    def label_of(self, value: str) -> str:
        return next((c.label for c in self.choices if c.value == value), value)

    def has_value(self, value: str) -> bool:
        return any(c.value == value for c in self.choices)


def _yes_no(text: str) -> str | None:
    if text in ("y", "yes", "yeah", "yep", "ja", "si", "sí", "oui", "j"):
        return "yes"
    if text in ("n", "no", "nope", "nah", "non", "nein"):
        return "no"
    return None


def yes_no(text: str, *extra: str, yes: str = "", no: str = "") -> Question:
    """A yes/no question; `yes` and `no` label the buttons when they restate the answer."""
    if not (yes or no) or (yes, no) == ("Yes", "No"):
        return Question(text, (Choice("yes", _("Yes")), Choice("no", _("No"))), _yes_no,
                        _('Please answer "yes" or "no".'), extra=extra)
    return Question(text, (Choice("yes", yes), Choice("no", no)), _yes_no,
                    _('Please pick a button, or answer "yes" or "no".'), columns=1, extra=extra)


# re.ASCII: 0-9 only, as everywhere numbers are read (conversations/numbers.py).
_PAIN = re.compile(r"(\d{1,2})(?:\s*(?:/|out of|of)\s*10)?", re.ASCII)


def parse_pain(text: str) -> str | None:
    """A whole number 0-10, alone or out of ten ("5/10", "5 out of 10"); "7.5", "-1", "11",
    "5/100", "seven" are not answers."""
    match = _PAIN.fullmatch(text)
    if match and int(match.group(1)) <= 10:
        return str(int(match.group(1)))
    return None


PAIN_HINT = N_("Please send a whole number from 0 (no pain) to 10 (worst imaginable).")


def pain_scale(text: str) -> Question:
    return Question(
        text, tuple(Choice(str(n), str(n)) for n in range(11)), parse_pain, _(PAIN_HINT),
        columns=6, extra=(_("0 = no pain, 10 = worst imaginable."),))


def choices(text: str, options: list[tuple[str, str]], hint: str | None = None,
            parse: Parser | None = None, columns: int = 1) -> Question:
    made = tuple(Choice(value, label) for value, label in options)
    numbered = _by_number(made)
    combined = numbered if parse is None else (lambda t: numbered(t) or parse(t))
    return Question(text, made, combined, hint or _("Please pick one of the buttons."),
                    columns=columns)


def _by_number(options: tuple[Choice, ...]) -> Parser:
    """Typed "2" picks the second option where the labels are not numbers themselves."""
    def pick(text: str) -> str | None:
        number = whole(text, 1, len(options))
        return None if number is None else options[number - 1].value
    return pick
