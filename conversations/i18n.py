"""The words in the user's language: one gettext domain, `kneecoach`, its catalogs read from the
.po files in conversations/locale/ with Babel when this module is imported. Nothing is compiled,
so no compiled file can drift from its .po (tests/test_languages.py checks the .po files against
the strings in the code).

A message id is the English text, so English needs no catalog. Placeholders are named:
`_("Your level is {level}.", level=3)`. Which language applies is set per message handled or
prompt rendered (`with speaking(lang):`), the way aiogram's i18n keeps it in a context variable,
so a flow only wraps its words and never passes a language around."""

from __future__ import annotations

import gettext as stdlib_gettext
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, time
from pathlib import Path

from babel import Locale
from babel.dates import format_date, format_time
from babel.messages.pofile import read_po

DOMAIN = "kneecoach"
LOCALE_DIR = Path(__file__).with_name("locale")
SOURCE = "en"
# Each language by its own name, as its button reads.
LANGUAGES: dict[str, str] = {"en": "English", "es": "Español", "de": "Deutsch"}
# A test language: every message in brackets with accented letters, so a reply word outside
# brackets is one that bypassed the catalog (tests/test_languages.py).
PSEUDO = "en_XA"

_current: ContextVar[str] = ContextVar("language", default=SOURCE)


class Catalog:
    """One language's translations: singular ids to text, (id, plural id) to the forms."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as f:
            po = read_po(f, domain=DOMAIN)
        self.plural: Callable[[int], int] = stdlib_gettext.c2py(po.plural_expr)
        self.singular: dict[str, str] = {}
        self.plurals: dict[tuple[str, str], tuple[str, ...]] = {}
        for m in po:
            if not m.id or m.fuzzy:
                continue
            if isinstance(m.id, tuple):
                forms = tuple(m.string)
                if all(forms):
                    self.plurals[(m.id[0], m.id[1])] = forms
            elif m.string:
                self.singular[m.id] = m.string


def _load() -> dict[str, Catalog]:
    return {lang: Catalog(LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po")
            for lang in LANGUAGES if lang != SOURCE}


CATALOGS = _load()

# Kept as they are in the test language: placeholders, and commands (the same in every
# language).
_KEPT = re.compile(r"(\{[^{}]*\}|/[a-z]+)")
_ACCENTS = str.maketrans("aeiouyAEIOUYcnCN", "áéíóúýÁÉÍÓÚÝçñÇÑ")


def pseudo(message: str) -> str:
    """`message` in the test language: accented and bracketed, its placeholders and commands
    kept."""
    parts = _KEPT.split(message)
    return "[" + "".join(p if p[:1] in "{/" and _KEPT.fullmatch(p) else p.translate(_ACCENTS)
                         for p in parts) + "]"


def current() -> str:
    return _current.get()


@contextmanager
def speaking(language: str | None) -> Iterator[None]:
    """Within the block, messages are in `language` (None or unknown: English)."""
    token = _current.set(language if language in LANGUAGES or language == PSEUDO else SOURCE)
    try:
        yield
    finally:
        _current.reset(token)


def switch(language: str) -> None:
    """Speak `language` until the enclosing `speaking` block ends (a user just chose it)."""
    _current.set(language)


def pick(code: str | None, default: str = SOURCE) -> str:
    """Our language for a platform's code ("es", "de-AT", "es_419", "pt-br"), else `default`."""
    primary = (code or "").replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else default


def gettext(message: str, **values: object) -> str:
    """`message` in the current language, its named placeholders filled from `values`."""
    lang = _current.get()
    if lang == PSEUDO:
        text = pseudo(message)
    else:
        found = CATALOGS.get(lang)
        text = found.singular.get(message, message) if found else message
    return text.format(**values) if values else text


_ = gettext


def ngettext(singular: str, plural: str, n: int, **values: object) -> str:
    """The form for `n` in the current language; `n` fills the `{n}` placeholder."""
    lang = _current.get()
    found = CATALOGS.get(lang)
    forms = found.plurals.get((singular, plural)) if found else None
    if forms is not None and found is not None:
        text = forms[min(found.plural(n), len(forms) - 1)]
    else:
        text = singular if n == 1 else plural
        if lang == PSEUDO:
            text = pseudo(text)
    return text.format(n=n, **values)


def N_(message: str) -> str:
    """Marks a message for the catalog where it is defined; `_()` translates it where used."""
    return message


def locale() -> Locale:
    """Babel's locale for the current language, for dates, weekdays and times."""
    lang = _current.get()
    return Locale.parse(SOURCE if lang == PSEUDO else lang)


def day(when: date) -> str:
    """A date for the patient: ISO in English (as always shown), else the locale's medium
    form ("4 dic 2026", "04.12.2026")."""
    if _current.get() in (SOURCE, PSEUDO):
        return when.isoformat()
    return format_date(when, "medium", locale=locale())


def clock_time(when: time) -> str:
    """A time of day: 24-hour HH:MM in English (as always shown), else the locale's short
    form."""
    if _current.get() in (SOURCE, PSEUDO):
        return when.strftime("%H:%M")
    return format_time(when, "short", locale=locale())


def short_date(when: date, year: bool = False) -> str:
    """A day and month, and the `year`: "04 Dec" ("04 Dec 2026") in English (as always shown),
    else the locale's ("4 dic", "4 dic 2026"); bracketed in the test language, as its words
    are."""
    if _current.get() == SOURCE:
        return when.strftime("%d %b %Y" if year else "%d %b")
    if _current.get() == PSEUDO:
        return pseudo(when.strftime("%d %b %Y" if year else "%d %b"))
    return format_date(when, "d MMM y" if year else "d MMM", locale=locale())
