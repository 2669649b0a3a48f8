"""The /progress chart: pain, sessions, level changes and the Kujala score on one PNG sized
for a phone screen (portrait, large type), with a one-line summary."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from conversations import i18n
from conversations.i18n import N_, _, ngettext

WIDTH_IN, HEIGHT_IN, DPI = 6.0, 8.0, 150  # 900 x 1200 pixels
STATUS_COLOURS = {"done": "#2e7d32", "partial": "#9ccc65", "skipped": "#bdbdbd",
                  "missed": "#e57373"}
STATUS_WORDS = {"done": N_("Done"), "partial": N_("Partly"), "skipped": N_("Skipped"),
                "missed": N_("Missed")}


@dataclass(frozen=True)
class DaySession:
    day: date
    status: str
    pain_during: int | None


@dataclass(frozen=True)
class Progress:
    sessions: list[DaySession]
    pains: list[tuple[date, int]]  # every pain report, by local day
    levels: list[tuple[date, int, int]]  # level changes: day, from, to
    kujala: list[tuple[date, int]]
    baseline_worst: int
    today: date


def summary(data: Progress) -> str:
    week = [s for s in data.sessions if (data.today - s.day).days < 7 and s.status != "prompted"]
    done = sum(s.status == "done" for s in week)
    partly = sum(s.status == "partial" for s in week)
    streak = 0
    for s in sorted(data.sessions, key=lambda s: s.day, reverse=True):
        if s.status == "prompted" and s.day == data.today:
            continue
        if s.status not in ("done", "partial"):
            break
        streak += 1
    recent = [p for d, p in data.pains if (data.today - d).days < 7]
    change = (_("worst pain this week {pain}/10, {change} since the start", pain=max(recent),
                change=_signed(max(recent) - data.baseline_worst))
              if recent else _("no pain reported this week"))
    # A partly done session is counted as partly, not as done (it still keeps the streak).
    sessions = _("{done} of {total} sessions done", done=done, total=len(week)) + (
        " " + _("and {partly} partly done", partly=partly) if partly else "")
    return _("This week: {sessions}; {change}; {streak}.", sessions=sessions, change=change,
             streak=ngettext("current streak {n} day", "current streak {n} days", streak))


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else f"{n}" if n < 0 else _("no change")


def render(data: Progress) -> bytes:
    """The chart as PNG bytes; the caller checks there is data to draw first."""
    import matplotlib  # here, not at the top: the bot and its commands start without it

    with matplotlib.rc_context({"font.size": 13, "axes.titlesize": 15,
                                "axes.titleweight": "bold"}):
        return _draw(data)


def _draw(data: Progress) -> bytes:
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure  # drawn straight to PNG by Agg: no display, no pyplot
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    pain_ax, sessions_ax, kujala_ax = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3.4, 1, 1.3]})
    first = min([data.today - timedelta(days=6), *(s.day for s in data.sessions),
                 *(d for d, _ in data.pains), *(d for d, _ in data.kujala)])
    span = (first - timedelta(days=1), data.today + timedelta(days=1))

    pain_ax.set_title(_("Pain (0-10)"), loc="left")
    # The zones patients are taught (CLINICAL.md), named at the right edge: colour alone is
    # not enough on a small screen or for colour-blind eyes.
    for low, high, colour, name in ((0, 2.5, "#e8f5e9", _("safe")),
                                    (2.5, 5.5, "#fff8e1", _("acceptable")),
                                    (5.5, 10.5, "#ffebee", _("too much"))):
        pain_ax.axhspan(low, high, color=colour, zorder=0)
        pain_ax.text(1, low + 0.15, name, transform=pain_ax.get_yaxis_transform(), ha="right",
                     va="bottom", fontsize=11, color="#555555", style="italic", zorder=4,
                     bbox={"facecolor": colour, "alpha": 0.8, "edgecolor": "none", "pad": 1})
    worst: dict[date, int] = defaultdict(int)
    for day, pain in data.pains:
        worst[day] = max(worst[day], pain)
    days = sorted(worst)
    dense = (span[1] - span[0]).days > 120  # months of points: thinner, or they hide the line
    pain_ax.plot(days, [worst[d] for d in days], color="#c62828", linewidth=1.2 if dense else 2.5,
                 marker="o", markersize=2 if dense else 5, label=_("Worst of the day"))
    during = [(s.day, s.pain_during) for s in data.sessions if s.pain_during is not None]
    pain_ax.scatter([d for d, _p in during], [p for _d, p in during], color="#1565c0",
                    s=8 if dense else 40, zorder=3, label=_("During exercise"))
    for day, _before, after in data.levels:
        pain_ax.axvline(day, color="#6a1b9a", linestyle="--", linewidth=1.5)
        pain_ax.text(day, 10.6, f"L{after}", color="#6a1b9a", ha="center", va="bottom",
                     fontsize=12, fontweight="bold")
    pain_ax.set_ylim(0, 11.5)
    pain_ax.set_yticks([0, 2, 5, 8, 10])
    # On the title's line, so it never covers a point or a level label.
    pain_ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=2, fontsize=11,
                   frameon=False, borderaxespad=0, handlelength=1.5, columnspacing=1)

    sessions_ax.set_title(_("Sessions"), loc="left")
    for s in data.sessions:
        if s.status in STATUS_COLOURS:
            sessions_ax.bar(s.day, 1, width=0.85, color=STATUS_COLOURS[s.status])
    sessions_ax.set_yticks([])
    present = [k for k in STATUS_COLOURS if any(s.status == k for s in data.sessions)]
    for key in present:
        sessions_ax.bar(data.today, 0, color=STATUS_COLOURS[key], label=_(STATUS_WORDS[key]))
    if present:
        sessions_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=len(present),
                           fontsize=11, frameon=False)

    kujala_ax.set_title(_("Knee score (Kujala, 0-100, higher is better)"), loc="left")
    if data.kujala:
        kujala_ax.plot([d for d, _ in data.kujala], [k for _, k in data.kujala], color="#00695c",
                       linewidth=2.5, marker="s", markersize=8)
        for day, score in data.kujala:
            kujala_ax.annotate(str(score), (day, score), textcoords="offset points",
                               xytext=(0, 8), ha="center", fontsize=12)
    kujala_ax.set_ylim(0, 125)  # room for the score labels above the points
    kujala_ax.set_yticks([0, 50, 100])
    kujala_ax.set_xlim(*span)
    kujala_ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=6))
    # Day and month in the patient's language (matplotlib's own names are English).
    kujala_ax.xaxis.set_major_formatter(FuncFormatter(
        lambda value, _pos: i18n.short_date(mdates.num2date(value).date())))
    for ax in (pain_ax, sessions_ax, kujala_ax):
        ax.spines[["top", "right"]].set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()
