"""The admin's figures: /stats (a summary per coach's group) and /export (a CSV row per
patient per week), over a period such as 30d, 12w or all; the command line renders the same."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, timedelta

from conversations.context import Ctx
from conversations.i18n import _
from conversations.messages import Document
from storage.stats import Stats, compute, weekly_rows

PERIODS = {"7d": 7, "30d": 30, "90d": 90, "all": None}
_PERIOD = re.compile(r"^([1-9]\d{0,3})([dw])$", re.ASCII)  # any number of days or weeks: 45d, 12w
MAX_PERIOD_DAYS = 3660


def period_of(text: str) -> tuple[str, int | None] | None:
    """"30d", "12w" or "all" to (the period as written, its days; None for all)."""
    key = text.strip().lower()
    if key in PERIODS:
        return key, PERIODS[key]
    match = _PERIOD.match(key)
    if match is None:
        return None
    days = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
    return (key, days) if days <= MAX_PERIOD_DAYS else None


def parse_period(args: tuple[str, ...]) -> tuple[str, int | None] | None:
    return period_of(args[0] if args else "30d")


def since_of(ctx: Ctx, days: int | None) -> date | None:
    return None if days is None else ctx.today - timedelta(days=days - 1)


COLUMNS = ("group", "enrolled", "new", "active", "paused", "referred", "stopped",
           "prompts_sent", "done", "partial", "skipped", "missed", "adherence",
           "median_pain_change", "median_kujala_change", "progressed", "held", "regressed")


def render(rows: list[Stats], fmt: str) -> str:
    data = [row.public() for row in rows]
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(data)
        return out.getvalue()
    cells = [[_cell(d[c]) for c in COLUMNS] for d in data]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def summary(row: Stats, period: str) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    return _("{group} ({period}): {enrolled} enrolled ({new} new), {active} active, {paused} "
             "paused, {referred} referred. Prompts sent {prompts}. Sessions: {done} done, "
             "{partial} partly, {skipped} skipped, {missed} missed; adherence {adherence}. "
             "Median change in worst pain {pain_change}, in Kujala {kujala_change}. Progressed "
             "{progressed}, held {held}, regressed {regressed}.", group=row.group,
             period=period, enrolled=row.enrolled, new=row.new, active=row.active,
             paused=row.paused, referred=row.referred, prompts=row.prompts_sent, done=row.done,
             partial=row.partial, skipped=row.skipped, missed=row.missed,
             adherence=pct(row.adherence), pain_change=_cell(row.median_pain_change),
             kujala_change=_cell(row.median_kujala_change), progressed=pct(row.progressed),
             held=pct(row.held), regressed=pct(row.regressed))


async def stats(ctx: Ctx) -> None:
    period = parse_period(ctx.inbound.args)
    if period is None:
        ctx.say(_("Usage: /stats 7d, 30d, 12w (any number of days or weeks) or all."))
        return
    rows = await compute(ctx.repo.db, since_of(ctx, period[1]), ctx.today)
    ctx.say("\n\n".join(summary(row, period[0]) for row in rows))


async def export(ctx: Ctx) -> None:
    period = parse_period(ctx.inbound.args)
    if period is None:
        ctx.say(_("Usage: /export 7d, 30d, 12w (any number of days or weeks) or all."))
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["patient", "coach", "week_start", "level", "done", "partial", "skipped",
                     "missed", "mean_pain", "worst_pain"])
    async for row in weekly_rows(ctx.repo.db, since_of(ctx, period[1])):
        writer.writerow([row.patient, row.coach or "", row.week_start.isoformat(), row.level,
                         row.done, row.partial, row.skipped, row.missed,
                         "" if row.mean_pain is None else row.mean_pain,
                         "" if row.worst_pain is None else row.worst_pain])
    ctx.repo.audit(ctx.user.display_id, "export_csv", ctx.now, period=period[0])
    ctx.say(_("One row per patient per week ({period}), as CSV.", period=period[0]),
            document=Document(filename=f"kneecoach-{period[0]}.csv",
                              content=out.getvalue().encode(), mime_type="text/csv"))
