"""The screening and questionnaire wording of CLINICAL.md sections 1-4, as data."""

from __future__ import annotations

from typing import Literal, NamedTuple

CONSENT_VERSION = "2026-11-1"

DISCLAIMER = (
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
    ScreenQuestion("Did the pain start with a fall, twist or blow to the knee, followed by "
                   "swelling within hours?", "Yes, it started with an injury and swelling",
                   "No"),
    ScreenQuestion("Does the knee lock (get stuck, so it will stay bent) or give way under "
                   "you?", "Yes, it locks or gives way", "No"),
    ScreenQuestion("Can you take four steps on this leg, putting your weight on it?",
                   "Yes, I can walk on it", "No, I can't take four steps", warning="no"),
    ScreenQuestion("Is the knee hot, red and swollen?", "Yes, it is hot, red and swollen",
                   "No"),
    ScreenQuestion("Do you have a fever, or feel generally unwell?",
                   "Yes, I have a fever or feel unwell", "No"),
    ScreenQuestion("Is your calf painful, swollen or red?", "Yes, my calf is painful, swollen "
                   "or red", "No"),
    ScreenQuestion("Is the knee painful at night or at rest, whatever position you are in?",
                   "Yes, it hurts at night or at rest", "No"),
    ScreenQuestion("Have you lost weight recently without trying?",
                   "Yes, I have lost weight without trying", "No"),
    ScreenQuestion("Is there numbness, pins and needles or weakness spreading down the leg?",
                   "Yes, there is numbness, tingling or weakness", "No"),
    ScreenQuestion("Are you under 16?", "Yes, I am under 16", "No, I am 16 or older"),
    ScreenQuestion("Has a doctor told you that the pain comes from something other than the "
                   "knee cap?", "Yes, a doctor said it is something else", "No"),
)

# Section 3: the five signs of patella mal-tracking; counted for the coach, never excluding.
SIGNS: tuple[str, ...] = (
    "Do you feel or hear grinding under the knee cap?",
    "Does it hurt going up and/or down stairs?",
    "Does it hurt to straighten the knee against resistance?",
    "Does the inner part of your thigh muscle, just above the knee (the VMO), feel weak?",
    "Is there slight puffiness or swelling above or below the knee cap?",
)

# Section 4: Kujala anterior knee pain scale, 13 items of (answer, points); total 0-100.
KUJALA: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    ("Do you limp?", (("None", 5), ("Slight or now and then", 3), ("Constant", 0))),
    ("Can you put weight on the leg?", (
        ("Full weight without pain", 5), ("Painful", 3), ("Weight bearing impossible", 0))),
    ("How far can you walk?", (
        ("Unlimited", 5), ("More than 2 km", 3), ("1-2 km", 2), ("Unable", 0))),
    ("Stairs?", (
        ("No difficulty", 10), ("Slight pain when going down", 8),
        ("Pain both going down and up", 5), ("Unable", 0))),
    ("Squatting?", (
        ("No difficulty", 5), ("Repeated squatting painful", 4), ("Painful each time", 3),
        ("Possible with partial weight", 2), ("Unable", 0))),
    ("Running?", (
        ("No difficulty", 10), ("Pain after more than 2 km", 8), ("Slight pain from start", 6),
        ("Severe pain", 3), ("Unable", 0))),
    ("Jumping?", (
        ("No difficulty", 10), ("Slight difficulty", 7), ("Constant pain", 2), ("Unable", 0))),
    ("Sitting for a long time with the knees bent?", (
        ("No difficulty", 10), ("Pain after exercise", 8), ("Constant pain", 6),
        ("Pain makes me straighten the knees for a while", 4), ("Unable", 0))),
    ("Pain?", (
        ("None", 10), ("Slight and now and then", 8), ("Interferes with sleep", 6),
        ("Now and then severe", 3), ("Constant and severe", 0))),
    ("Swelling?", (
        ("None", 10), ("Only after severe exertion", 8), ("After daily activities", 6),
        ("Every evening", 4), ("Constant", 0))),
    ("Painful, unusual movements of the knee cap?", (
        ("None", 10), ("Now and then in sports", 6), ("Now and then in daily activities", 4),
        ("At least one documented dislocation", 2), ("More than two dislocations", 0))),
    ("Has the thigh muscle wasted (got thinner)?", (("None", 5), ("Slight", 3), ("Severe", 0))),
    ("Can you bend the knee fully?", (
        ("Yes, fully (no deficit)", 5), ("Slight deficit", 3), ("Severe deficit", 0))),
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
                  "not being able to bear weight needs a clinician to rule out an injury"),
    WarningAnswer("How far can you walk?", "Unable",
                  "not being able to walk needs a clinician to rule out an injury"),
    WarningAnswer("Painful, unusual movements of the knee cap?",
                  "At least one documented dislocation",
                  "a knee cap that has dislocated is a different problem from knee-cap pain"),
    WarningAnswer("Painful, unusual movements of the knee cap?", "More than two dislocations",
                  "a knee cap that has dislocated is a different problem from knee-cap pain"),
    WarningAnswer("Swelling?", "Constant",
                  "swelling that never goes away suggests a problem inside the joint"),
    WarningAnswer("Pain?", "Constant and severe",
                  "constant, severe pain needs a clinician to look at the knee first"),
    WarningAnswer("Do you limp?", "Constant",
                  "a constant limp with this much pain needs a clinician to look at the knee",
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
