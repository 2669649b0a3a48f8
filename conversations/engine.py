"""The engine: one inbound message in, the replies out, in one database transaction.

It resolves the user, drops redelivered updates, runs the commands (conversations/commands.py)
and feeds answers to the step the user's stored conversation is waiting on. The conversation
state carries a version: a write against an old version fails and the whole message is
retried on fresh state, so two processes never both advance the same conversation."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conversations import commands, i18n
from conversations.clock import Clock
from conversations.context import ERASED, REASK, STAY, Ctx, Flow
from conversations.demo import DemoCache
from conversations.flows import (
    account,
    broadcast,
    holds,
    howto,
    language,
    messages,
    onboarding,
    patient_file,
    prescription,
    progress,
    session,
    staff,
)
from conversations.localtime import local_date
from conversations.messages import ButtonToken, Inbound, Outbound
from conversations.program.data import Program
from conversations.prompts import SNOOZE, prompt_message
from storage import outbox, prescriptions
from storage.db import Outage, backoff, database_lost, one_writer
from storage.models import ConversationState, User
from storage.repository import Repository, StaleState

log = logging.getLogger(__name__)

FLOWS: dict[str, Flow] = {"onboarding": onboarding.FLOW, **session.FLOWS, **account.FLOWS,
                          **broadcast.FLOWS, **progress.FLOWS, **messages.FLOWS}

STALE_BUTTON = i18n.N_("That button belongs to an earlier question, so I ignored it.")
# Said by a channel adapter itself, outside any conversation: to a group it was added to, and
# when handling an update failed.
PRIVATE_ONLY = i18n.N_("I only talk in private chats, to keep your health data private. Open a "
                       "chat with me directly to start.")
APOLOGY = i18n.N_("Sorry, something went wrong on my side. Please try again in a moment.")
RETRY_LIMIT = 3
DB_PATIENCE = 600.0  # seconds an update is held while the database is unreachable


class Engine:
    def __init__(self, sessions: async_sessionmaker[DbSession], program: Program,
                 clock: Clock, admins: frozenset[tuple[str, str]] = frozenset(),
                 demos: DemoCache | None = None, *, db_patience: float = DB_PATIENCE,
                 default_language: str = i18n.SOURCE) -> None:
        self.sessions = sessions
        # A new user's language when their platform names none we speak.
        self.default_language = default_language
        self.demos = demos or DemoCache()
        self.db_patience = db_patience
        # Shared by every update in hand: one log line per outage, not one per update.
        self._outage = Outage("updates", log)
        self.program = program
        self.clock = clock
        self.admins = admins
        # Filled in by channel adapters that can link to the bot (Telegram's deep links).
        self.invite_links: dict[str, str] = {}

    def words(self, message: str, language: str | None) -> str:
        """One of the messages above in the language the platform gives for the user (the
        stored choice may be out of reach: the database can be what failed)."""
        with i18n.speaking(i18n.pick(language, self.default_language)):
            return i18n._(message)

    async def handle(self, inbound: Inbound) -> list[Outbound]:
        """The replies to one update. While the database is unreachable the update is held
        and tried again with backoff (up to `db_patience` seconds), so it is answered when
        the database is back instead of being dropped."""
        return (await self.handle_behind(inbound, check=False))[0]

    async def handle_behind(self, inbound: Inbound, check: bool = True
                            ) -> tuple[list[Outbound], bool]:
        """`handle`, and whether the chat's outbox holds a message its replies must queue
        behind, read in the update's own transaction: a session of its own for that was a
        third of a reply's database time (bench/telegram_update_cost.py, profiled)."""
        with i18n.speaking(i18n.pick(inbound.language, self.default_language)):
            return await self._handle_held(inbound, check)

    async def _handle_held(self, inbound: Inbound, check: bool
                           ) -> tuple[list[Outbound], bool]:
        clashes = tries = 0
        started = asyncio.get_running_loop().time()
        while True:
            try:
                async with one_writer(self.sessions), self.sessions() as db, db.begin():
                    replies = await self._handle(Repository(db), inbound)
                    behind = check and bool(replies) and await outbox.chat_waiting(
                        db, inbound.channel, inbound.chat_id, self.clock.now())
            except (StaleState, IntegrityError) as exc:
                clashes += 1
                if clashes == RETRY_LIMIT:
                    return [_reply(inbound, i18n._("Sorry, that clashed with another message. "
                                                   "Please send it again."))], False
                log.info("retrying update %s: %s", inbound.update_id, exc)
            except Exception as exc:
                if not database_lost(exc) or (
                        asyncio.get_running_loop().time() - started >= self.db_patience):
                    raise
                self._outage.lost(exc)
                await asyncio.sleep(backoff(tries))
                tries += 1
            else:
                self._outage.back()
                return replies, behind

    async def mark_unreachable(self, channel: str, chat_id: str) -> None:
        """The channel says this chat blocked the bot: no prompts until they write again."""
        async with self.sessions() as db, db.begin():
            await Repository(db).set_unreachable(channel, chat_id)

    async def defer(self, inbound: Inbound, replies: list[Outbound], sent: int = 0,
                    tried: bool = True) -> None:
        """Replies the channel could not send now go to the outbox, which retries them under
        the platform's limits: a reply is never dropped because the platform was busy. The
        first one's `sent` parts went out already and are not sent again; `tried`: it failed
        once, so it counts as being retried and the chat's later messages wait for it."""
        async with self.sessions() as db, db.begin():
            repo = Repository(db)
            user = await repo.user(inbound.channel, inbound.user_id)
            for n, reply in enumerate(replies):
                await repo.enqueue(
                    user_id=user.id if user else None, channel=reply.channel,
                    chat_id=reply.chat_id, kind="reply", payload=reply.model_dump(mode="json"),
                    now=self.clock.now(), parts_sent=sent if n == 0 else 0,
                    attempts=int(tried and n == 0),
                    dedupe_key=f"reply:{inbound.update_id}:{n}" if inbound.update_id else None)

    async def home(self, channel: str, user_id: str) -> str:
        """The text of the user's at-a-glance page (Slack's App Home); read only."""
        async with self.sessions() as db:
            repo = Repository(db)
            user = await repo.user(channel, user_id)
            if user is None:
                with i18n.speaking(self.default_language):
                    return i18n._(progress.NOT_STARTED)
            today = local_date(self.clock.now(), user.timezone or "UTC")
            with i18n.speaking(user.language or self.default_language):
                return await progress.home(repo, user, today)

    async def _handle(self, repo: Repository, inbound: Inbound) -> list[Outbound]:
        now = self.clock.now()
        if inbound.update_id and not await repo.first_delivery(inbound.channel,
                                                                inbound.update_id, now):
            return []
        found = await repo.user_with_state(inbound.channel, inbound.user_id)
        admin = (inbound.channel, inbound.user_id) in self.admins
        if found is None and admin:
            # An admin needs no patient consent: their row holds ids and a role, no health data.
            user = await repo.add_user(inbound.channel, inbound.user_id, inbound.chat_id, now)
            user.status, user.role = "staff", "admin"
            user.language = i18n.pick(inbound.language, self.default_language)
            found = user, await repo.state(user.id)
        if found is None:
            return await self._stranger(repo, inbound)
        user, state = found
        self._refresh_identity(user, inbound)
        with i18n.speaking(user.language or i18n.pick(inbound.language, self.default_language)):
            return await self._handle_user(repo, inbound, user, state, admin, now)

    async def _handle_user(self, repo: Repository, inbound: Inbound, user: User,
                           state: ConversationState, admin: bool, now: datetime
                           ) -> list[Outbound]:
        ctx = Ctx(repo=repo, inbound=inbound, user=user, now=now, program=self.program,
                  flow=state.flow, answers=dict(state.answers), admin=admin,
                  links=self.invite_links, demos=self.demos,
                  default_language=self.default_language)
        if inbound.command is not None:
            await self._goto(ctx, state, await commands.run(ctx, inbound.command))
        elif inbound.button is not None:
            await self._press(ctx, state, inbound.button)
        elif state.flow == "idle":
            ctx.say(i18n._("I am not sure what you mean. /today shows your exercises, /pain "
                           "records pain, /help lists everything."))
        else:
            await self._answer(ctx, state, inbound.text or "")
        return ctx.replies

    async def _stranger(self, repo: Repository, inbound: Inbound) -> list[Outbound]:
        """Someone we hold nothing about: only /start creates a row (the pending consent)."""
        if inbound.command != "start":
            return [_reply(inbound, i18n._("Hello, I am kneecoach, an exercise coach for "
                                           "knee-cap pain. Send /start to begin."))]
        now = self.clock.now()
        user = await repo.add_user(inbound.channel, inbound.user_id, inbound.chat_id, now)
        user.language = i18n.pick(inbound.language, self.default_language)
        state = await repo.state(user.id)
        ctx = Ctx(repo=repo, inbound=inbound, user=user, now=now, program=self.program,
                  flow="idle", answers={}, default_language=self.default_language)
        if inbound.args:  # an invite code from a deep link waits until consent is given
            await staff.hold_invite(ctx, inbound.args[0])
        await self._goto(ctx, state, "onboarding:consent")
        return ctx.replies

    @staticmethod
    def _refresh_identity(user: User, inbound: Inbound) -> None:
        user.unreachable = False  # they wrote to us, so they can be reached again
        if user.chat_id != inbound.chat_id:
            user.chat_id = inbound.chat_id
        if user.consent_at is not None and inbound.display_name and (
                user.display_name != inbound.display_name):
            user.display_name = inbound.display_name

    # --- moving through flows ------------------------------------------------------------
    async def _goto(self, ctx: Ctx, state: ConversationState, target: str | None) -> None:
        """Save where the conversation is now and ask that step's question."""
        if target in (ERASED, STAY):
            return
        if target == REASK:
            await self._reask(ctx, state)
            return
        if target is None:
            flow, step, ctx.answers = "idle", "", {}
        else:
            flow, _, step = target.rpartition(":")
            flow = flow or ctx.flow
        await ctx.repo.save_state(state, flow, step, ctx.answers, ctx.now)
        ctx.flow = flow
        if target is not None:
            self._ask(ctx, state)

    def _ask(self, ctx: Ctx, state: ConversationState) -> None:
        question = FLOWS[state.flow][state.step].ask(ctx)
        text = "\n".join((question.text, *question.extra))
        ctx.say(text, question.buttons(state.step, state.version))

    async def _reask(self, ctx: Ctx, state: ConversationState, hint: str | None = None) -> None:
        if state.flow == "idle":
            return
        if hint:
            ctx.say(hint)
        self._ask(ctx, state)

    async def _answer(self, ctx: Ctx, state: ConversationState, text: str) -> None:
        step = FLOWS[state.flow][state.step]
        question = step.ask(ctx)
        value = question.read_text(text)
        if value is None:
            await self._reask(ctx, state, question.hint)
            return
        await self._goto(ctx, state, await step.answer(ctx, value))

    async def _press(self, ctx: Ctx, state: ConversationState, raw: str) -> None:
        token = ButtonToken.decode(raw)
        if token is not None and token.step in SESSION_BUTTONS:
            await SESSION_BUTTONS[token.step](self, ctx, state, token)
            return
        step = FLOWS.get(state.flow, {}).get(state.step)
        question = step.ask(ctx) if step else None
        if (token is None or step is None or question is None or token.step != state.step
                or token.ref != state.version or not question.has_value(token.value)):
            self._retire(ctx)
            ctx.say(i18n._(STALE_BUTTON) if state.flow != "idle" else
                    i18n._(STALE_BUTTON) + " " + i18n._("/help lists what I can do."))
            await self._reask(ctx, state)
            return
        self._retire(ctx, f"{question.text}\n» {question.label_of(token.value)}")
        await self._goto(ctx, state, await step.answer(ctx, token.value))

    @staticmethod
    def _retire(ctx: Ctx, text: str = "") -> None:
        """Take the keyboard off the pressed message (empty text: keep the text as it is)."""
        if ctx.inbound.message_id:
            ctx.say(text, edit_message_id=ctx.inbound.message_id)

    # --- buttons on scheduled messages (bound to a session, not to the conversation) -------
    async def _prompt_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                             ) -> None:
        found = await ctx.repo.session(token.ref)
        if found is None or found.user_id != ctx.user.id or ctx.user.status != "active":
            self._retire(ctx)
            ctx.say(i18n._(STALE_BUTTON) + " " + i18n._("/today shows today's session."))
            return
        if token.step == "prompt" and found.status == "prompted" and token.value == "snooze":
            self._retire(ctx, i18n._("Snoozed for an hour."))
            rx = await prescriptions.current(ctx.repo.db, ctx.user.id)
            again = prompt_message(ctx.inbound.channel, ctx.user.chat_id, found.id, found.level,
                                   self.program, rx.off, rx.instruction)
            queued = await ctx.repo.enqueue(
                user_id=ctx.user.id, channel=ctx.user.channel, chat_id=ctx.user.chat_id,
                kind="prompt", payload=again.model_dump(mode="json"), now=ctx.now,
                not_before=ctx.now + SNOOZE,
                dedupe_key=f"snooze:{found.id}:{ctx.inbound.message_id or ctx.now.isoformat()}")
            ctx.say(i18n._("I will remind you again in an hour.") if queued else
                    i18n._("That reminder is snoozed already."))
            return
        if token.step == "prompt" and found.status == "prompted":
            ctx.answers = {"session_id": found.id}
            ctx.flow = "session"
            self._retire(ctx, i18n._("Session of {day}", day=i18n.day(found.day)))
            await self._goto(ctx, state, await session.answer_status(ctx, token.value)
                             if token.value in ("done", "partial", "skipped") else "status")
            return
        if token.step == "check" and found.morning_at is None and found.status in (
                "done", "partial") and token.value in ("0", "1", "2"):
            ctx.answers = {"session_id": found.id}
            ctx.flow = "morning"
            self._retire(ctx, i18n._("Morning check after {day}", day=i18n.day(found.day)))
            await self._goto(ctx, state, await session.answer_morning_delta(ctx, token.value))
            return
        self._retire(ctx)
        ctx.say(i18n._("You have already answered that one. /today shows today's session."))

    async def _how_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                          ) -> None:
        await howto.press(ctx, token)  # the keyboard stays: the other exercises' buttons

    async def _clear_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                            ) -> None:
        self._retire(ctx)
        await staff.clear_button(ctx, token)

    async def _ask_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                          ) -> None:
        await self._goto(ctx, state, await messages.press_ask(ctx, token))

    async def _file_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                           ) -> None:
        await patient_file.press(ctx, token)  # the keyboard stays: its pages and changes

    async def _language_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                               ) -> None:
        self._retire(ctx)
        if await language.press(ctx, token):
            await self._reask(ctx, state)

    async def _reply_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                            ) -> None:
        self._retire(ctx)
        await self._goto(ctx, state, await messages.press_reply(ctx, token))


SESSION_BUTTONS = {"prompt": Engine._prompt_button, "check": Engine._prompt_button,
                   holds.CLEAR_STEP: Engine._clear_button, howto.STEP: Engine._how_button,
                   messages.ASK_STEP: Engine._ask_button, language.STEP: Engine._language_button,
                   messages.REPLY_STEP: Engine._reply_button,
                   patient_file.STEP: Engine._file_button,
                   prescription.STEP: Engine._file_button}


def _reply(inbound: Inbound, text: str) -> Outbound:
    return Outbound(channel=inbound.channel, chat_id=inbound.chat_id, text=text)

