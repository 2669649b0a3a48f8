"""Messages between patient and coach through the engine, on SQLite and PostgreSQL: /ask and
the "Message my coach" button, the Reply button and /reply, stored once, queued once, audited
by ids; a coach writes only to their own patients; forged and replayed buttons do nothing."""

from __future__ import annotations

import json

from clinic import audits, queued, reply_token, stored
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import Patient, enrolled
from conversations.engine import Engine
from conversations.flows import messages as flow
from conversations.messages import ButtonToken
from storage.models import Outbox, User


async def test_a_question_reaches_the_coach_and_the_reply_the_patient_once_each(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    coach, pam, _, _ = clinic
    question = "Is it fine to\n\n  *run* again?  _asking_ for a friend 🦵"
    await pam.send(f"/ask {question}", update_id="u-ask")
    assert "Sent to your coach. Their reply will come here." in pam.text
    assert await pam.send(f"/ask {question}", update_id="u-ask") == []  # redelivered: once
    (to_coach,) = await queued(sessions, "coach")
    assert to_coach["text"] == f"Message from Name of pam (console:pam):\n\n{question}"

    await coach.press_token(reply_token(to_coach))
    assert "Write your reply to Name of pam (console:pam)" in coach.text
    answer = "Yes,\n  gently: *two* laps first."
    await coach.send(answer)
    assert "Sent to Name of pam (console:pam)." in coach.text
    (to_pam,) = await queued(sessions, "pam")
    assert to_pam["text"] == f"Message from your coach:\n\n{answer}"
    assert to_pam["buttons"][0][0]["label"] == flow.MESSAGE_BUTTON  # she can write back

    first, second = await stored(sessions)
    assert (first.sender, first.text, first.read_at) == ("patient", question, None)
    assert (second.sender, second.text, second.reply_to) == ("coach", answer, first.id)
    assert await audits(sessions, "message") == [
        ("console:pam", {"coach": "console:coach", "message": first.id}),
        ("console:coach", {"patient": "console:pam", "message": second.id})]


async def test_a_patient_without_a_coach_is_told_there_is_no_coach_to_write_to(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    ned = await enrolled(staff_engine, "ned")
    for command in ("/ask hello", "/ask"):
        await ned.send(command)
        assert flow.NO_COACH in ned.text
    async with sessions() as db:
        ned_id = (await db.scalars(select(User.id).filter_by(channel_user_id="ned"))).one()
    await ned.press_token(ButtonToken(step=flow.ASK_STEP, ref=ned_id, value="").encode())
    assert flow.NO_COACH in ned.text
    await ned.press_token(ButtonToken(step=flow.ASK_STEP, ref=ned_id + 1, value="").encode())
    assert flow.NOT_OWN_BUTTON in ned.text
    assert await stored(sessions) == []


async def test_empty_huge_emoji_and_formatted_messages(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    _, pam, _, _ = clinic
    await pam.send("/ask")  # no text: asked for it
    assert "Write your message to your coach" in pam.text
    await pam.send("   ")
    assert flow.HINT.format(max=f"{flow.MAX_MESSAGE:,}") in pam.text
    await pam.send("x" * (flow.MAX_MESSAGE + 1))
    assert flow.HINT.format(max=f"{flow.MAX_MESSAGE:,}") in pam.text
    formatted = "<b>bold</b> & *star* _under_ `code` [link](x) ~ # | {} \\ 🦵🏽‍♀️"
    await pam.send(formatted)
    assert "Sent to your coach" in pam.text
    await pam.send("/ask " + "y" * (flow.MAX_MESSAGE + 1))
    assert flow.TOO_LONG.format(max=f"{flow.MAX_MESSAGE:,}") in pam.text
    long = "\n".join(f"line {n}: ü 😀 *x*" for n in range(300))  # over 4,000 characters
    await pam.send(f"/ask {long}")
    assert [m.text for m in await stored(sessions)] == [formatted, long]
    assert len(long) > 4000


async def test_the_session_report_offers_message_my_coach(
        clinic: tuple[Patient, ...], staff_engine: Engine,
        sessions: async_sessionmaker[DbSession]) -> None:
    _, pam, _, _ = clinic
    await pam.send("/today")
    await pam.press("Done")
    await pam.press("2")
    assert "Recorded: done, pain 2/10" in pam.text
    assert [b.label for b in pam.buttons] == [flow.MESSAGE_BUTTON]
    await pam.press(flow.MESSAGE_BUTTON)
    assert "Write your message to your coach" in pam.text
    await pam.send("The squats felt easy today.")
    assert "Sent to your coach" in pam.text
    assert (await stored(sessions))[0].text == "The squats felt easy today."

    ned = await enrolled(staff_engine, "ned")  # no coach: no button
    await ned.send("/today")
    await ned.press("Skipped")
    assert "A skipped day is fine" in ned.text and ned.buttons == []


async def test_a_coach_writes_only_to_their_own_patients(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    coach, pam, _, _ = clinic
    for target in ("console:obi", "console:nobody", "obi", "🦵", "telegram:" + "9" * 80):
        await coach.send(f"/reply {target} hello")
        assert "is not one of your patients, so you cannot write to them" in coach.text
    await coach.send("/reply")
    assert flow.REPLY_USAGE in coach.text
    await pam.send("/reply console:coach hi")  # a patient cannot reach a coach this way
    assert "only for coaches" in pam.text
    assert await stored(sessions) == []
    refused = await audits(sessions, "refused")
    assert [detail["target"] for _, detail in refused[:2]] == ["console:obi", "console:nobody"]
    assert refused[-1] == ("console:pam", {"command": "reply"})

    await coach.send("/reply console:pam")  # no text yet: asked for it
    await coach.send("See you Tuesday.")
    assert [m.text for m in await stored(sessions)] == ["See you Tuesday."]


async def test_forged_and_replayed_reply_buttons_do_nothing(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    coach, pam, other, obi = clinic
    await pam.send("/ask A question for my coach.")
    token = reply_token((await queued(sessions, "coach"))[0])
    ref = ButtonToken.decode(token)
    assert ref is not None
    forged = [ButtonToken(step=flow.REPLY_STEP, ref=ref.ref + 100, value="").encode(),
              ButtonToken(step=flow.REPLY_STEP, ref=ref.ref, value="x").encode()]
    for presser, data in ((other, token), (obi, token), (pam, token), (coach, forged[0]),
                          (coach, forged[1]), (coach, "reply_to|0|"), (coach, "garbage")):
        await presser.press_token(data)
        assert "ignored it" in presser.text, (presser.user_id, data, presser.text)
        assert "Write your reply" not in presser.text
    refused = await audits(sessions, "refused")
    assert ("console:other", {"command": "reply", "target": f"message {ref.ref}"}) in refused

    await coach.press_token(token)
    await coach.send("An answer.")
    await coach.press_token(token)  # replayed after the reply: says so, asks nothing
    assert flow.ANSWERED.format(patient="console:pam") in coach.text
    await coach.send("not a reply")
    assert "I am not sure what you mean" in coach.text
    assert [m.text for m in await stored(sessions)] == ["A question for my coach.", "An answer."]
    async with sessions() as db:
        assert await db.scalar(select(func.count()).select_from(Outbox)
                               .where(Outbox.kind == "message")) == 2


async def test_mydata_holds_the_messages_and_delete_removes_them(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    coach, pam, _, _ = clinic
    await pam.send("/ask Mine to keep.")
    await coach.send("/reply console:pam Yours to keep.")
    await pam.send("/mydata")
    (export,) = [r.document for r in pam.replies if r.document]
    rows = json.loads(export.content)["tables"]["messages"]
    assert [(r["sender"], r["text"]) for r in rows] == [
        ("patient", "Mine to keep."), ("coach", "Yours to keep.")]
    await pam.send("/delete")
    await pam.send("DELETE")
    assert await stored(sessions) == []
    assert await queued(sessions, "coach") == [] and await queued(sessions, "pam") == []
