"""A sentence kept to be worded when read: a hold's reason is stored as its message id and
values (JSON), so the coach's alert and the patient file show it in the reader's language.
Rows stored before this (plain English text) are shown as stored."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from conversations.i18n import _


class Said(BaseModel):
    """A catalog message id and its named values; a value may be a message itself."""

    id: str
    values: dict[str, int | float | str | Said] = {}

    def text(self) -> str:
        """The sentence in the current language."""
        return _(self.id, **{k: v.text() if isinstance(v, Said) else v
                             for k, v in self.values.items()})

    def stored(self) -> str:
        return self.model_dump_json()


def wording(message: str, **values: int | float | str | Said) -> Said:
    """`message` (marked with N_ where written) and its values, to be worded when read."""
    return Said(id=message, values=values)


def shown(stored: str | None) -> str | None:
    """A stored reason in the current language; one stored as plain text, as it is."""
    if not stored or not stored.startswith("{"):
        return stored
    try:
        return Said.model_validate_json(stored).text()
    except ValidationError:
        return stored
