"""/language: the user picks the language they read, at any step. The buttons are bound to the
user, not to the conversation, so a press changes the words and asks the same question again
with its answers kept."""

from __future__ import annotations

from conversations import i18n
from conversations.context import Ctx
from conversations.i18n import _
from conversations.messages import Button, ButtonToken

STEP = "lang"


def buttons(ctx: Ctx) -> tuple[tuple[Button, ...], ...]:
    return (tuple(Button(label=name, token=ButtonToken(step=STEP, ref=ctx.user.id,
                                                       value=code).encode())
                  for code, name in i18n.LANGUAGES.items()),)


def choose(ctx: Ctx, code: str) -> None:
    """Store `code` and speak it for the rest of this message."""
    ctx.user.language = code
    i18n.switch(code)
    ctx.say(_("From now on I will write in English."))


async def command(ctx: Ctx) -> bool:
    """/language shows the buttons; `/language es` sets it. True: the language changed."""
    if not ctx.inbound.args:
        ctx.say(_("Which language shall I write in?"), buttons(ctx))
        return False
    code = i18n.pick(ctx.inbound.args[0], "")
    if not code:
        ctx.say(_("I do not speak that language. Choose one of these:"), buttons(ctx))
        return False
    choose(ctx, code)
    return True


async def press(ctx: Ctx, token: ButtonToken) -> bool:
    """A press on a language button; refused when it is not this user's or names no language
    we speak. True: the language changed."""
    if token.ref != ctx.user.id or token.value not in i18n.LANGUAGES:
        ctx.say(_("That button is not one of mine any more. /language shows the languages."))
        return False
    choose(ctx, token.value)
    return True
