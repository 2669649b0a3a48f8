"""The screening and questionnaire wording of CLINICAL.md sections 1-4, as data."""

from __future__ import annotations

CONSENT_VERSION = "2026-11-1"

DISCLAIMER = (
    "kneecoach is an exercise coach for knee-cap (patellofemoral) pain. It is not a diagnosis "
    "and not a replacement for a physiotherapist or doctor.\n"
    "- Stop any exercise that causes sharp pain.\n"
    "- Seek urgent care for the warning signs I will ask about.\n"
    "If you agree, I will store your answers, exercise reports and pain scores to coach you. "
    "You can see them with /mydata and erase them with /delete at any time."
)

# Section 2: any "yes" means no program and advice to see a clinician.
RED_FLAGS: tuple[str, ...] = (
    "Did the pain start with an injury (a fall, twist or blow) with swelling within hours?",
    "Does the knee lock (get stuck and cannot straighten) or give way under you?",
    "Can you not take four steps on the leg, or not bear weight at all?",
    "Is the knee hot, red and swollen, or do you have a fever or feel unwell?",
    "Is your calf painful, swollen or red?",
    "Is the pain there at night or at rest whatever you do, or have you lost weight without "
    "trying?",
    "Is there numbness, pins and needles or weakness spreading down the leg?",
    "Are you under 16, or has a doctor told you the cause is something other than the knee cap?",
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
