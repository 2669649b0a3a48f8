"""The engine: one inbound message in, the replies out, in one database transaction.

It resolves the user, drops redelivered updates, runs global commands, and feeds answers to
the step the user's stored conversation is waiting on. The conversation state carries a
version: a write against an old version fails and the whole message is retried on fresh
state, so two processes never both advance the same conversation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conversations.clock import Clock
from conversations.demo import DemoCache
from conversations.flow import ERASED, Ctx, Flow
from conversations.flows import (
    account,
    admin,
    holds,
    howto,
    messages,
    onboarding,
    progress,
    session,
    staff,
)
from conversations.messages import ButtonToken, Inbound, Outbound
from conversations.program.data import Program
from conversations.prompts import SNOOZE, prompt_message
from conversations.schedule import local_date
from storage.db import Outage, backoff, database_lost
from storage.models import ConversationState, User
from storage.repository import Repository, StaleState

log = logging.getLogger(__name__)

FLOWS: dict[str, Flow] = {"onboarding": onboarding.FLOW, **session.FLOWS, **account.FLOWS,
                          **staff.FLOWS, **progress.FLOWS, **messages.FLOWS}

ENROLLED = ("active", "paused", "referred", "stopped")

HELP = (
    "I am kneecoach, your knee-cap exercise coach.\n"
    "/today - today's exercises and report how it went\n"
    "/how - see how an exercise is done (/how 1 for the first)\n"
    "/pain - report your knee pain now\n"
    "/progress - your level, sessions and pain so far\n"
    "/settings - change reminder time, days or timezone\n"
    "/pause, /resume, /stop - pause, restart or stop the reminders\n"
    "/mydata - everything I hold about you, as a file\n"
    "/delete - erase everything I hold about you\n"
    "/cancel - leave the current question; nothing half-done is kept\n"
    "I am not a diagnosis or a clinician. Stop an exercise that causes sharp pain and see a "
    "physiotherapist or doctor if you are worried."
)
STAFF_HELP = (
    "Coach commands: /invite (a code for a new patient; /invite revoke CODE), /patients "
    "[page], /broadcast (preview, then send now or schedule), /clear USER [level] (lift a "
    "patient's hold after a referral or pain pause).\n"
    "Admin commands: /grant coach USER, /revoke coach USER, /stats [7d|30d|90d|all], "
    "/export [7d|30d|90d|all] (CSV).\n"
    "USER is a channel id such as telegram:123456. Patients' commands: /help."
)
# The command menu a channel shows (Telegram's setMyCommands): the patient's commands.
MENU: tuple[tuple[str, str], ...] = (
    ("today", "today's exercises; report how it went"),
    ("how", "see how an exercise is done"),
    ("pain", "report your knee pain now"),
    ("progress", "your chart: sessions, pain, level"),
    ("settings", "reminder time, days or timezone"),
    ("pause", "pause the reminders"),
    ("resume", "start the reminders again"),
    ("stop", "stop the program"),
    ("mydata", "everything I hold about you, as a file"),
    ("delete", "erase everything I hold about you"),
    ("cancel", "leave the current question"),
    ("help", "what I can do"),
)
STALE_BUTTON = "That button belongs to an earlier question, so I ignored it."
RETRY_LIMIT = 3
DB_PATIENCE = 600.0  # seconds an update is held while the database is unreachable


class Engine:
    def __init__(self, sessions: async_sessionmaker[DbSession], program: Program,
                 clock: Clock, admins: frozenset[tuple[str, str]] = frozenset(),
                 demos: DemoCache | None = None, *, db_patience: float = DB_PATIENCE) -> None:
        self.sessions = sessions
        self.demos = demos or DemoCache()
        self.db_patience = db_patience
        # Shared by every update in hand: one log line per outage, not one per update.
        self._outage = Outage("updates", log)
        self.program = program
        self.clock = clock
        self.admins = admins
        # Filled in by channel adapters that can link to the bot (Telegram's deep links).
        self.invite_links: dict[str, str] = {}

    async def handle(self, inbound: Inbound) -> list[Outbound]:
        """The replies to one update. While the database is unreachable the update is held
        and tried again with backoff (up to `db_patience` seconds), so it is answered when
        the database is back instead of being dropped."""
        clashes = tries = 0
        started = asyncio.get_running_loop().time()
        while True:
            try:
                async with self.sessions() as db, db.begin():
                    replies = await self._handle(Repository(db), inbound)
            except (StaleState, IntegrityError) as exc:
                clashes += 1
                if clashes == RETRY_LIMIT:
                    return [_reply(inbound, "Sorry, that clashed with another message. "
                                            "Please send it again.")]
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
                return replies

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
                return progress.NOT_STARTED
            today = local_date(self.clock.now(), user.timezone or "UTC")
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
            found = user, await repo.state(user.id)
        if found is None:
            return await self._stranger(repo, inbound)
        user, state = found
        self._refresh_identity(user, inbound)
        ctx = Ctx(repo=repo, inbound=inbound, user=user, now=now, program=self.program,
                  flow=state.flow, answers=dict(state.answers), admin=admin,
                  links=self.invite_links, demos=self.demos)
        if inbound.command is not None:
            command = COMMANDS.get(inbound.command)
            if command is None:
                ctx.say(f"I do not know /{inbound.command}. /help lists what I can do.")
                await self._reask(ctx, state)
            else:
                await command(self, ctx, state)
        elif inbound.button is not None:
            await self._press(ctx, state, inbound.button)
        elif state.flow == "idle":
            ctx.say("I am not sure what you mean. /today shows your exercises, /pain records "
                    "pain, /help lists everything.")
        else:
            await self._answer(ctx, state, inbound.text or "")
        return ctx.replies

    async def _stranger(self, repo: Repository, inbound: Inbound) -> list[Outbound]:
        """Someone we hold nothing about: only /start creates a row (the pending consent)."""
        if inbound.command != "start":
            return [_reply(inbound, "Hello, I am kneecoach, an exercise coach for knee-cap "
                                    "pain. Send /start to begin.")]
        now = self.clock.now()
        user = await repo.add_user(inbound.channel, inbound.user_id, inbound.chat_id, now)
        state = await repo.state(user.id)
        ctx = Ctx(repo=repo, inbound=inbound, user=user, now=now, program=self.program,
                  flow="idle", answers={})
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
        if target == ERASED:
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
            ctx.say(STALE_BUTTON if state.flow != "idle" else
                    f"{STALE_BUTTON} /help lists what I can do.")
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
            ctx.say(f"{STALE_BUTTON} /today shows today's session.")
            return
        if token.step == "prompt" and found.status == "prompted" and token.value == "snooze":
            self._retire(ctx, "Snoozed for an hour.")
            again = prompt_message(ctx.inbound.channel, ctx.user.chat_id, found.id, found.level,
                                   self.program)
            queued = await ctx.repo.enqueue(
                user_id=ctx.user.id, channel=ctx.user.channel, chat_id=ctx.user.chat_id,
                kind="prompt", payload=again.model_dump(mode="json"), now=ctx.now,
                not_before=ctx.now + SNOOZE,
                dedupe_key=f"snooze:{found.id}:{ctx.inbound.message_id or ctx.now.isoformat()}")
            ctx.say("I will remind you again in an hour." if queued else
                    "That reminder is snoozed already.")
            return
        if token.step == "prompt" and found.status == "prompted":
            ctx.answers = {"session_id": found.id}
            ctx.flow = "session"
            self._retire(ctx, f"Session of {found.day.isoformat()}")
            await self._goto(ctx, state, await session.answer_status(ctx, token.value)
                             if token.value in ("done", "partial", "skipped") else "status")
            return
        if token.step == "check" and found.morning_at is None and found.status in (
                "done", "partial") and token.value in ("0", "1", "2"):
            ctx.answers = {"session_id": found.id}
            ctx.flow = "morning"
            self._retire(ctx, f"Morning check after {found.day.isoformat()}")
            await self._goto(ctx, state, await session.answer_morning_delta(ctx, token.value))
            return
        self._retire(ctx)
        ctx.say("You have already answered that one. /today shows today's session.")

    # --- global commands -----------------------------------------------------------------
    async def _start(self, ctx: Ctx, state: ConversationState) -> None:
        if ctx.inbound.args and ctx.user.consent_at is not None:
            await staff.attach(ctx, ctx.inbound.args[0])
        elif ctx.inbound.args and ctx.user.status == "pending":
            await staff.hold_invite(ctx, ctx.inbound.args[0])
            await self._goto(ctx, state, "onboarding:consent")  # keeps the code with the step
            return
        if ctx.user.status == "staff":
            ctx.say(STAFF_HELP)
            return
        if ctx.user.status in ("pending", "onboarding"):
            if state.flow == "onboarding":
                ctx.say("Welcome back; here is where we were.")
                self._ask(ctx, state)
            elif ctx.user.status == "onboarding":  # consented, then cancelled the questions
                ctx.say("Let us go through the questions from the start.")
                await self._goto(ctx, state, onboarding.start_screen(ctx))
            else:
                await self._goto(ctx, state, "onboarding:consent")
        elif ctx.user.status == "referred":
            await self._resume(ctx, state)
        else:
            ctx.say("You are already set up. /today shows today's exercises; /help lists "
                    "everything.")

    async def _help(self, ctx: Ctx, state: ConversationState) -> None:
        ctx.say(HELP)
        await self._reask(ctx, state)

    async def _cancel(self, ctx: Ctx, state: ConversationState) -> None:
        if state.flow == "idle":
            ctx.say("There is nothing to cancel. /help lists what I can do.")
            return
        ctx.flow = "idle"
        await self._goto(ctx, state, None)
        ctx.say("Cancelled. Nothing from that conversation was saved." +
                (" Send /start to continue setting up." if ctx.user.status in (
                    "pending", "onboarding") else ""))

    async def _needs_enrolment(self, ctx: Ctx, state: ConversationState) -> bool:
        if ctx.user.status in ENROLLED:
            return False
        ctx.say("Let us finish setting up first.")
        if state.flow == "idle":
            await self._goto(ctx, state, "onboarding:consent")
        else:
            self._ask(ctx, state)
        return True

    async def _today(self, ctx: Ctx, state: ConversationState) -> None:
        if await self._needs_enrolment(ctx, state):
            return
        if ctx.user.status != "active":
            ctx.say(_NOT_ACTIVE[ctx.user.status])
            return
        await self._goto(ctx, state, await session.open_today(ctx))

    async def _pain(self, ctx: Ctx, state: ConversationState) -> None:
        if await self._needs_enrolment(ctx, state):
            return
        ctx.answers = {}
        await self._goto(ctx, state, "pain:now")

    async def _settings(self, ctx: Ctx, state: ConversationState) -> None:
        if await self._needs_enrolment(ctx, state):
            return
        ctx.answers = {}
        await self._goto(ctx, state, "settings:what")

    async def _pause(self, ctx: Ctx, state: ConversationState) -> None:
        if await self._needs_enrolment(ctx, state):
            return
        if ctx.user.status != "active":
            ctx.say(_NOT_ACTIVE[ctx.user.status])
            return
        ctx.user.status = "paused"
        await account.reschedule(ctx)
        ctx.say("Paused: no reminders until you send /resume.")
        await self._reask(ctx, state)

    async def _resume(self, ctx: Ctx, state: ConversationState) -> None:
        if await self._needs_enrolment(ctx, state):
            return
        if ctx.user.status == "referred":
            ctx.answers = {}
            await self._goto(ctx, state, await account.resume_held(ctx))
            return
        if ctx.user.status == "active":
            ctx.say("Your program is running already. /today shows today's session.")
            return
        ctx.user.status = "active"
        await account.reschedule(ctx)
        ctx.say(f"Welcome back. {account.schedule_line(ctx)} /today shows today's session.")
        await self._reask(ctx, state)

    async def _stop(self, ctx: Ctx, state: ConversationState) -> None:
        if ctx.user.status in ("pending", "onboarding"):
            await self._goto(ctx, state, await account.stop_onboarding(ctx))
            return
        if await self._needs_enrolment(ctx, state):
            return
        ctx.answers = {}
        await self._goto(ctx, state, "stop:confirm")

    async def _how(self, ctx: Ctx, state: ConversationState) -> None:
        await howto.command(ctx)
        await self._reask(ctx, state)

    async def _how_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                          ) -> None:
        await howto.press(ctx, token)  # the keyboard stays: the other exercises' buttons

    async def _progress(self, ctx: Ctx, state: ConversationState) -> None:
        if await self._needs_enrolment(ctx, state):
            return
        await progress.show(ctx)
        await self._reask(ctx, state)

    async def _mydata(self, ctx: Ctx, state: ConversationState) -> None:
        await account.export(ctx)
        await self._reask(ctx, state)

    async def _delete(self, ctx: Ctx, state: ConversationState) -> None:
        ctx.answers = {}
        await self._goto(ctx, state, "delete:confirm")

    async def _join(self, ctx: Ctx, state: ConversationState) -> None:
        await staff.join(ctx)
        await self._reask(ctx, state)

    async def _coach_only(self, ctx: Ctx, state: ConversationState) -> bool:
        if staff.is_coach(ctx):
            return False
        await staff.refuse(ctx, "coach")
        await self._reask(ctx, state)
        return True

    async def _admin_only(self, ctx: Ctx, state: ConversationState) -> bool:
        if ctx.admin:
            return False
        await staff.refuse(ctx, "admin")
        await self._reask(ctx, state)
        return True

    async def _invite(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._coach_only(ctx, state):
            await staff.invite(ctx)

    async def _patients(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._coach_only(ctx, state):
            await staff.patients(ctx)

    async def _broadcast(self, ctx: Ctx, state: ConversationState) -> None:
        if await self._coach_only(ctx, state):
            return
        recipients = await ctx.repo.patients_of(ctx.user.id, ("active",))
        if not recipients:
            ctx.say("You have no active patients to send to. /invite makes a code for them.")
            return
        ctx.answers = {"recipients": len(recipients)}
        await self._goto(ctx, state, "broadcast:text")

    async def _clear(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._coach_only(ctx, state):
            await staff.clear(ctx)

    async def _clear_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                            ) -> None:
        self._retire(ctx)
        await staff.clear_button(ctx, token)

    async def _grant(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._admin_only(ctx, state):
            await staff.grant(ctx, give=True)

    async def _revoke(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._admin_only(ctx, state):
            await staff.grant(ctx, give=False)

    async def _stats(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._admin_only(ctx, state):
            await staff.stats(ctx)

    async def _ask_coach(self, ctx: Ctx, state: ConversationState) -> None:
        await self._go_or_reask(ctx, state, await messages.ask(ctx))

    async def _reply(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._coach_only(ctx, state):
            await self._go_or_reask(ctx, state, await messages.reply(ctx))

    async def _go_or_reask(self, ctx: Ctx, state: ConversationState, target: str | None
                           ) -> None:
        if target is None:
            await self._reask(ctx, state)
        else:
            await self._goto(ctx, state, target)

    async def _ask_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                          ) -> None:
        target = await messages.press_ask(ctx, token)
        if target is not None:
            await self._goto(ctx, state, target)

    async def _reply_button(self, ctx: Ctx, state: ConversationState, token: ButtonToken
                            ) -> None:
        target = await messages.press_reply(ctx, token)
        if target is not None:
            await self._goto(ctx, state, target)

    async def _coaches(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._admin_only(ctx, state):
            await admin.coaches(ctx)

    async def _assign(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._admin_only(ctx, state):
            await admin.assign(ctx)

    async def _export(self, ctx: Ctx, state: ConversationState) -> None:
        if not await self._admin_only(ctx, state):
            await staff.export(ctx)


_NOT_ACTIVE = {
    "paused": "Your program is paused. Send /resume to start again.",
    "stopped": "Your program is stopped. Send /resume to start again.",
    "referred": ("Your program is paused until a clinician has seen your knee. After that, "
                 "send /resume."),
    "active": "",
}

Command = Callable[[Engine, Ctx, ConversationState], Awaitable[None]]
COMMANDS: dict[str, Command] = {
    "start": Engine._start,
    "help": Engine._help,
    "cancel": Engine._cancel,
    "today": Engine._today,
    "how": Engine._how,
    "pain": Engine._pain,
    "progress": Engine._progress,
    "settings": Engine._settings,
    "pause": Engine._pause,
    "resume": Engine._resume,
    "stop": Engine._stop,
    "mydata": Engine._mydata,
    "delete": Engine._delete,
    "join": Engine._join,
    "invite": Engine._invite,
    "patients": Engine._patients,
    "broadcast": Engine._broadcast,
    "clear": Engine._clear,
    "grant": Engine._grant,
    "revoke": Engine._revoke,
    "stats": Engine._stats,
    "export": Engine._export,
    "ask": Engine._ask_coach,
    "reply": Engine._reply,
    "coaches": Engine._coaches,
    "assign": Engine._assign,
}
SESSION_BUTTONS = {"prompt": Engine._prompt_button, "check": Engine._prompt_button,
                   holds.CLEAR_STEP: Engine._clear_button, howto.STEP: Engine._how_button,
                   messages.ASK_STEP: Engine._ask_button,
                   messages.REPLY_STEP: Engine._reply_button}


def _reply(inbound: Inbound, text: str) -> Outbound:
    return Outbound(channel=inbound.channel, chat_id=inbound.chat_id, text=text)

