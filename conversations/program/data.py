"""The exercise program file: pydantic models, validated at start-up, and how a level reads."""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from conversations import i18n
from conversations.i18n import _

# The languages every exercise's words must be given in, besides the file's own English.
TRANSLATED = tuple(code for code in i18n.LANGUAGES if code != i18n.SOURCE)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the demonstration: key poses of a figure, drawn by conversations/demo.py -------------
Prop = Literal["floor", "foam_roller", "ball", "wall", "chair"]
# A side view cannot show these; the renderer adds a small second view for each.
Detail = Literal["foot_out", "knees_over_toes", "ball_squeeze", "knee_opens"]


class Leg(_Frozen):
    """Joint angles in degrees. hip: flexion (thigh forward of the trunk's line; negative is
    extension); knee: flexion (0 straight); ankle: dorsiflexion (toes up; negative points
    them). turn_out: the foot turned out (hip external rotation), shown in a second view."""

    hip: float = Field(ge=-30, le=140)
    knee: float = Field(ge=0, le=150)
    ankle: float = Field(0, ge=-50, le=30)
    turn_out: float = Field(0, ge=0, le=60)


class Arm(_Frozen):
    """shoulder: flexion from hanging by the trunk (180 is overhead, negative reaches back);
    elbow: flexion."""

    shoulder: float = Field(0, ge=-90, le=180)
    elbow: float = Field(0, ge=0, le=150)


class Pose(_Frozen):
    """One key pose and how the figure gets there: `move` seconds from the previous pose,
    then held `hold` seconds, or `hold = "dose"` for the dose's hold (1 s when it has none)."""

    name: str = Field(min_length=1, max_length=24)
    # The trunk's direction in the picture: 0 upright, positive leaning forward (the figure
    # faces right), -90 lying on the back with the head to the left.
    trunk: float = Field(ge=-180, le=180)
    working: Leg
    other: Leg
    arm: Arm = Arm()
    # How far along the working thigh the prop under it sits (0 hip, 1 just above the knee):
    # the foam roller's place in a rolling pass.
    along: float = Field(0.5, ge=0, le=1)
    move: float = Field(1.0, ge=0, le=10)
    hold: Annotated[float, Field(ge=0, le=60)] | Literal["dose"] = 0.0


class Demo(_Frozen):
    # side: the figure faces right; front and above: the same angles in that plane (lying on
    # the side seen from the front, hip is the leg's lift; seen from above, the legs' bend).
    view: Literal["side", "front", "above"] = "side"
    # What stays put while the figure moves: the stance foot, the back on the wall, ...
    anchor: Literal["pelvis", "other_foot", "shoulders", "roller", "wall"] = "pelvis"
    props: tuple[Prop, ...] = ("floor",)
    details: tuple[Detail, ...] = ()
    poses: tuple[Pose, ...] = Field(min_length=2, max_length=8)

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if len(set(self.props)) != len(self.props):
            raise ValueError("each prop once")
        if all(p.move == 0 for p in self.poses[1:]):
            raise ValueError("the poses never move: give a move time")
        if "ball_squeeze" in self.details and "ball" not in self.props:
            raise ValueError("the ball_squeeze detail needs the ball prop")
        needs = {"roller": "foam_roller", "wall": "wall"}.get(self.anchor)
        if needs and needs not in self.props:
            raise ValueError(f"anchor {self.anchor} needs the {needs} prop")
        return self


# What a clinic may show instead of the drawing, by file type, with the size the chat
# platforms take (Telegram bots: photos up to 10 MB, other files up to 50 MB).
MEDIA_KINDS: dict[str, tuple[Literal["photo", "animation", "video"], int, tuple[bytes, ...]]] = {
    ".jpg": ("photo", 10 << 20, (b"\xff\xd8\xff",)),
    ".jpeg": ("photo", 10 << 20, (b"\xff\xd8\xff",)),
    ".png": ("photo", 10 << 20, (b"\x89PNG\r\n\x1a\n",)),
    ".gif": ("animation", 50 << 20, (b"GIF87a", b"GIF89a")),
    ".mp4": ("video", 50 << 20, ()),  # checked by its "ftyp" box instead
}


class Words(_Frozen):
    """An exercise's name and how-to line in one language."""

    name: str = Field(min_length=1)
    how: str = Field(min_length=1)


class Exercise(_Frozen):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=24)
    name: str = Field(min_length=1)
    how: str = Field(min_length=1)
    # [exercises.translations.es]: name and how in each language of TRANSLATED.
    translations: dict[str, Words] = Field(default_factory=dict, validate_default=True)
    optional: bool = False
    foot_turned_out: bool = False
    demo: Demo
    # A clinic's own picture or clip, sent instead of the drawing; relative to the program file.
    media: Path | None = None

    @field_validator("media")
    @classmethod
    def _media_usable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = (info.context or {}).get("base")
        path = value if value.is_absolute() or base is None else Path(base) / value
        kind = MEDIA_KINDS.get(path.suffix.lower())
        if kind is None:
            raise ValueError(f"{value}: use a JPEG, PNG, GIF or MP4 file")
        try:
            size = path.stat().st_size
            with path.open("rb") as handle:
                head = handle.read(12)
        except OSError as exc:
            raise ValueError(f"{value}: cannot read: {exc.strerror or exc}") from None
        if size == 0 or size > kind[1]:
            raise ValueError(f"{value}: {size} bytes; the chat platforms take 1 byte to "
                             f"{kind[1] >> 20} MB for this type")
        magic_ok = (head[4:8] == b"ftyp" if path.suffix.lower() == ".mp4"
                    else head.startswith(kind[2]))
        if not magic_ok:
            raise ValueError(f"{value}: the content is not a {path.suffix.lower()[1:]} file")
        return path.resolve()

    @field_validator("translations")
    @classmethod
    def _every_language(cls, value: dict[str, Words]) -> dict[str, Words]:
        missing = [code for code in TRANSLATED if code not in value]
        if missing:
            raise ValueError(f"no translation in {', '.join(missing)} "
                             "([exercises.translations.LANGUAGE] with name and how)")
        unknown = set(value) - set(TRANSLATED)
        if unknown:
            raise ValueError(f"translation in a language we do not speak: "
                             f"{', '.join(sorted(unknown))}")
        return value

    @property
    def words(self) -> Words:
        """Name and how-to in the current language."""
        found = self.translations.get(i18n.current())
        if found is not None:
            return found
        if i18n.current() == i18n.PSEUDO:
            return Words(name=i18n.pseudo(self.name), how=i18n.pseudo(self.how))
        return Words(name=self.name, how=self.how)

    @property
    def media_kind(self) -> Literal["photo", "animation", "video"] | None:
        return MEDIA_KINDS[self.media.suffix.lower()][0] if self.media else None


class Dose(_Frozen):
    sets: int = Field(ge=1, le=10)
    reps: int | None = Field(None, ge=1, le=50)
    seconds: int | None = Field(None, ge=1, le=600)
    hold_seconds: int | None = Field(None, ge=1, le=60)
    note: str | None = None

    @model_validator(mode="after")
    def _reps_or_seconds(self) -> Self:
        if (self.reps is None) == (self.seconds is None):
            raise ValueError("give exactly one of reps or seconds")
        return self

    def describe(self, notes: dict[str, dict[str, str]] | None = None) -> str:
        """"3 x 10, 5 s hold, to 30 deg" in the current language; `notes`: the program's
        translations of the notes."""
        amount = f"{self.reps}" if self.reps is not None else f"{self.seconds} s"
        parts = [f"{self.sets} x {amount}"]
        if self.hold_seconds:
            parts.append(_("{seconds} s hold", seconds=self.hold_seconds))
        if self.note:
            lang = i18n.current()
            note = (notes or {}).get(self.note, {}).get(lang, self.note)
            parts.append(i18n.pseudo(note) if lang == i18n.PSEUDO else note)
        return ", ".join(parts)


class Level(_Frozen):
    number: int = Field(ge=1)
    doses: dict[str, Dose]


class Program(_Frozen):
    version: str = Field(min_length=1)
    exercises: list[Exercise] = Field(min_length=1)
    levels: list[Level] = Field(min_length=1)
    # [notes."to 30 deg"]: each dose note in each language of TRANSLATED.
    notes: dict[str, dict[str, str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ids = [e.id for e in self.exercises]
        if len(set(ids)) != len(ids):
            raise ValueError("exercise ids must be unique")
        if [lv.number for lv in self.levels] != list(range(1, len(self.levels) + 1)):
            raise ValueError("levels must be numbered 1, 2, 3 ... in order")
        optional = {e.id for e in self.exercises if e.optional}
        for level in self.levels:
            unknown = set(level.doses) - set(ids)
            if unknown:
                raise ValueError(f"level {level.number} names unknown exercise "
                                 f"{', '.join(sorted(unknown))}")
            if not set(level.doses) - optional:
                raise ValueError(f"level {level.number} has no required exercise")
            for dose in level.doses.values():
                given = self.notes.get(dose.note or "", {}) if dose.note else None
                if given is not None and not all(given.get(code) for code in TRANSLATED):
                    raise ValueError(f"note {dose.note!r} of level {level.number} needs a "
                                     f"[notes] translation in {', '.join(TRANSLATED)}")
        return self

    @property
    def top_level(self) -> int:
        return len(self.levels)

    def exercise(self, exercise_id: str) -> Exercise | None:
        return next((e for e in self.exercises if e.id == exercise_id), None)

    def session_lines(self, level: int, include_optional: bool = True,
                      off: Collection[str] = ()) -> list[str]:
        """One line per exercise of the level, in program order, with its dose and how-to;
        without those a coach switched `off` for the patient."""
        doses = self.levels[level - 1].doses
        lines = []
        for exercise in self.exercises:
            dose = doses.get(exercise.id)
            if dose is None or (exercise.optional and not include_optional) or (
                    exercise.id in off):
                continue
            extra = " " + _("(optional hip work)") if exercise.optional else ""
            words = exercise.words
            lines.append(f"{words.name}{extra}: {dose.describe(self.notes)} - {words.how}")
        return lines


class ProgramError(Exception):
    """A program file that cannot be used: one line with the file, the field and the reason."""


def default_program_path() -> Path:
    return Path(__file__).with_name("program.toml")


def load_program(path: Path | None = None) -> Program:
    path = path or default_program_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProgramError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProgramError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Program.model_validate(raw, context={"base": path.parent})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        field = ".".join(str(part) for part in loc) or "(top level)"
        if len(loc) >= 2 and loc[0] == "exercises" and isinstance(loc[1], int):
            # Name the exercise by the id the clinician sees in the file, too.
            exercises = raw.get("exercises")
            entry = exercises[loc[1]] if isinstance(exercises, list) and loc[1] < len(
                exercises) else None
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                field += f" (exercise {entry['id']!r})"
        raise ProgramError(f"{path}: {field}: {first['msg']}") from None
