"""The exercise program file: pydantic models, validated at start-up, and how a level reads."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Exercise(_Frozen):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str = Field(min_length=1)
    how: str = Field(min_length=1)
    optional: bool = False
    foot_turned_out: bool = False


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

    def describe(self) -> str:
        amount = f"{self.reps}" if self.reps is not None else f"{self.seconds} s"
        parts = [f"{self.sets} x {amount}"]
        if self.hold_seconds:
            parts.append(f"{self.hold_seconds} s hold")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)


class Level(_Frozen):
    number: int = Field(ge=1)
    doses: dict[str, Dose]


class Program(_Frozen):
    version: str = Field(min_length=1)
    exercises: list[Exercise] = Field(min_length=1)
    levels: list[Level] = Field(min_length=1)

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
        return self

    @property
    def top_level(self) -> int:
        return len(self.levels)

    def session_lines(self, level: int, include_optional: bool = True) -> list[str]:
        """One line per exercise of the level, in program order, with its dose and how-to."""
        doses = self.levels[level - 1].doses
        lines = []
        for exercise in self.exercises:
            dose = doses.get(exercise.id)
            if dose is None or (exercise.optional and not include_optional):
                continue
            extra = " (optional hip work)" if exercise.optional else ""
            lines.append(f"{exercise.name}{extra}: {dose.describe()} - {exercise.how}")
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
        return Program.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ProgramError(f"{path}: {field}: {first['msg']}") from None
