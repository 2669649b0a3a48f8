"""The screening and questionnaire wording of CLINICAL.md sections 1-4, as data."""

from __future__ import annotations

from typing import Literal, NamedTuple

from conversations.i18n import N_

CONSENT_VERSION = "2026-11-1"

DISCLAIMER = N_(
    "kneecoach is an exercise coach for knee-cap (patellofemoral) pain. It is not a diagnosis "
    "and not a replacement for a physiotherapist or doctor.\n"
    "- Stop any exercise that causes sharp pain.\n"
    "- Seek urgent care for the warning signs I will ask about.\n"
    "If you agree, I will store your answers, exercise reports and pain scores to coach you. "
    "You can see them with /mydata and erase them with /delete at any time."
)

class ScreenQuestion(NamedTuple):
    """One red-flag question (CLINICAL.md 2a): one idea, asked positively, and buttons that
    restate the answer, so nobody has to work out which of yes and no is the warning."""

    text: str
    yes: str  # the button for "yes", in the patient's words
    no: str
    warning: Literal["yes", "no"] = "yes"  # the answer that is the warning sign

    def label(self, value: str) -> str:
        return self.yes if value == "yes" else self.no


# Section 2: a warning answer to any of these means no program and advice to see a clinician.
RED_FLAGS: tuple[ScreenQuestion, ...] = (
    ScreenQuestion(N_("Did the pain start with a fall, twist or blow to the knee, followed by "
                      "swelling within hours?"),
                   N_("Yes, it started with an injury and swelling"), N_("No")),
    ScreenQuestion(N_("Does the knee lock (get stuck, so it will stay bent) or give way under "
                      "you?"), N_("Yes, it locks or gives way"), N_("No")),
    ScreenQuestion(N_("Can you take four steps on this leg, putting your weight on it?"),
                   N_("Yes, I can walk on it"), N_("No, I can't take four steps"), warning="no"),
    ScreenQuestion(N_("Is the knee hot, red and swollen?"),
                   N_("Yes, it is hot, red and swollen"), N_("No")),
    ScreenQuestion(N_("Do you have a fever, or feel generally unwell?"),
                   N_("Yes, I have a fever or feel unwell"), N_("No")),
    ScreenQuestion(N_("Is your calf painful, swollen or red?"),
                   N_("Yes, my calf is painful, swollen or red"), N_("No")),
    ScreenQuestion(N_("Is the knee painful at night or at rest, whatever position you are in?"),
                   N_("Yes, it hurts at night or at rest"), N_("No")),
    ScreenQuestion(N_("Have you lost weight recently without trying?"),
                   N_("Yes, I have lost weight without trying"), N_("No")),
    ScreenQuestion(N_("Is there numbness, pins and needles or weakness spreading down the leg?"),
                   N_("Yes, there is numbness, tingling or weakness"), N_("No")),
    ScreenQuestion(N_("Are you under 16?"), N_("Yes, I am under 16"), N_("No, I am 16 or older")),
    ScreenQuestion(N_("Has a doctor told you that the pain comes from something other than the "
                      "knee cap?"), N_("Yes, a doctor said it is something else"), N_("No")),
)

# Section 3: the five signs of patella mal-tracking; counted for the coach, never excluding.
SIGNS: tuple[str, ...] = (
    N_("Do you feel or hear grinding under the knee cap?"),
    N_("Does it hurt going up and/or down stairs?"),
    N_("Does it hurt to straighten the knee against resistance?"),
    N_("Does the inner part of your thigh muscle, just above the knee (the VMO), feel weak?"),
    N_("Is there slight puffiness or swelling above or below the knee cap?"),
)

# Section 4: Kujala anterior knee pain scale, 13 items of (answer, points); total 0-100.
KUJALA: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    (N_("Do you limp?"), (
        (N_("None"), 5), (N_("Slight or now and then"), 3), (N_("Constant"), 0))),
    (N_("Can you put weight on the leg?"), (
        (N_("Full weight without pain"), 5), (N_("Painful"), 3),
        (N_("Weight bearing impossible"), 0))),
    (N_("How far can you walk?"), (
        (N_("Unlimited"), 5), (N_("More than 2 km"), 3), (N_("1-2 km"), 2), (N_("Unable"), 0))),
    (N_("Stairs?"), (
        (N_("No difficulty"), 10), (N_("Slight pain when going down"), 8),
        (N_("Pain both going down and up"), 5), (N_("Unable"), 0))),
    (N_("Squatting?"), (
        (N_("No difficulty"), 5), (N_("Repeated squatting painful"), 4),
        (N_("Painful each time"), 3), (N_("Possible with partial weight"), 2),
        (N_("Unable"), 0))),
    (N_("Running?"), (
        (N_("No difficulty"), 10), (N_("Pain after more than 2 km"), 8),
        (N_("Slight pain from start"), 6), (N_("Severe pain"), 3), (N_("Unable"), 0))),
    (N_("Jumping?"), (
        (N_("No difficulty"), 10), (N_("Slight difficulty"), 7), (N_("Constant pain"), 2),
        (N_("Unable"), 0))),
    (N_("Sitting for a long time with the knees bent?"), (
        (N_("No difficulty"), 10), (N_("Pain after exercise"), 8), (N_("Constant pain"), 6),
        (N_("Pain makes me straighten the knees for a while"), 4), (N_("Unable"), 0))),
    (N_("Pain?"), (
        (N_("None"), 10), (N_("Slight and now and then"), 8), (N_("Interferes with sleep"), 6),
        (N_("Now and then severe"), 3), (N_("Constant and severe"), 0))),
    (N_("Swelling?"), (
        (N_("None"), 10), (N_("Only after severe exertion"), 8),
        (N_("After daily activities"), 6), (N_("Every evening"), 4), (N_("Constant"), 0))),
    (N_("Painful, unusual movements of the knee cap?"), (
        (N_("None"), 10), (N_("Now and then in sports"), 6),
        (N_("Now and then in daily activities"), 4),
        (N_("At least one documented dislocation"), 2), (N_("More than two dislocations"), 0))),
    (N_("Has the thigh muscle wasted (got thinner)?"), (
        (N_("None"), 5), (N_("Slight"), 3), (N_("Severe"), 0))),
    (N_("Can you bend the knee fully?"), (
        (N_("Yes, fully (no deficit)"), 5), (N_("Slight deficit"), 3),
        (N_("Severe deficit"), 0))),
)


def kujala_score(answers: list[int]) -> int:
    """Sum of the points of the chosen option per item (indexes into KUJALA's options)."""
    if len(answers) != len(KUJALA):
        raise ValueError(f"expected {len(KUJALA)} answers, got {len(answers)}")
    return sum(KUJALA[i][1][choice][1] for i, choice in enumerate(answers))


class WarningAnswer(NamedTuple):
    """A Kujala answer that means the same as a "yes" on the screen (CLINICAL.md 2b)."""

    question: str  # the Kujala item's text, as in KUJALA
    answer: str  # the option's label, as in KUJALA
    why: str  # for the patient and the coach: why it needs a clinician first
    with_pain: int | None = None  # only together with pain at or above this


# Section 2b, wherever the answer is given: baseline, the 4-weekly Kujala, a pain report.
WARNING_ANSWERS: tuple[WarningAnswer, ...] = (
    WarningAnswer("Can you put weight on the leg?", "Weight bearing impossible",
                  N_("not being able to bear weight needs a clinician to rule out an injury")),
    WarningAnswer("How far can you walk?", "Unable",
                  N_("not being able to walk needs a clinician to rule out an injury")),
    WarningAnswer("Painful, unusual movements of the knee cap?",
                  "At least one documented dislocation",
                  N_("a knee cap that has dislocated is a different problem from "
                     "knee-cap pain")),
    WarningAnswer("Painful, unusual movements of the knee cap?", "More than two dislocations",
                  N_("a knee cap that has dislocated is a different problem from "
                     "knee-cap pain")),
    WarningAnswer("Swelling?", "Constant",
                  N_("swelling that never goes away suggests a problem inside the joint")),
    WarningAnswer("Pain?", "Constant and severe",
                  N_("constant, severe pain needs a clinician to look at the knee first")),
    WarningAnswer("Do you limp?", "Constant",
                  N_("a constant limp with this much pain needs a clinician to look at the "
                     "knee"),
                  with_pain=6),
)
BASELINE_PAIN_REFER = 8  # worst weekly pain at baseline: R4 at the start


def _indexes(sign: WarningAnswer) -> tuple[int, int]:
    item = next(i for i, (text, _) in enumerate(KUJALA) if text == sign.question)
    option = next(i for i, (label, _) in enumerate(KUJALA[item][1]) if label == sign.answer)
    return item, option


# (item, option) -> sign; built at import, so a typo in the data fails at start-up.
WARNING_BY_ANSWER: dict[tuple[int, int], WarningAnswer] = {
    _indexes(sign): sign for sign in WARNING_ANSWERS}


def warning_answer(item: int, option: int, pain: int | None) -> WarningAnswer | None:
    """The 2b sign a Kujala answer is, given the patient's pain (None: not known)."""
    sign = WARNING_BY_ANSWER.get((item, option))
    if sign is None or (sign.with_pain is not None and (pain is None or pain < sign.with_pain)):
        return None
    return sign
