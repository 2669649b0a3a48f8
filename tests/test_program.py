"""The shipped program file matches CLINICAL.md section 6; bad files fail with file, field
and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from conversations.program.data import ProgramError, default_program_path, load_program


def test_shipped_program_matches_the_ladder() -> None:
    program = load_program()
    assert program.top_level == 5
    level1, level3 = program.levels[0].doses, program.levels[2].doses
    assert "squat" not in level1  # no body-weight squat at level 1
    assert level1["roll"].describe() == "1 x 60 s"
    assert level1["ball_squat"].describe() == "2 x 8, 3 s hold, to 30 deg"
    assert level3["knee_ext"].sets == 3 and level3["knee_ext"].reps == 12
    assert level3["knee_ext"].note and "0.5-1 kg" in level3["knee_ext"].note
    assert "90 to about 45" in (program.levels[1].doses["knee_ext"].note or "")
    assert program.levels[4].doses["stretch"].describe() == "3 x 45 s"
    assert "bridge" not in level1 and "bridge" in program.levels[1].doses


def test_session_lines_read_well() -> None:
    program = load_program()
    lines = program.session_lines(2)
    assert len(lines) == 9 and lines[0].startswith("Foam-roll")
    assert sum("foot turned out" in line for line in lines) == 2
    assert all("optional" in line for line in lines[-3:])
    assert len(program.session_lines(2, include_optional=False)) == 6


def _bad(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "program.toml"
    path.write_text(text)
    return path


SHIPPED = default_program_path().read_text()


@pytest.mark.parametrize("text,field,reason", [
    (SHIPPED.replace("number = 3", "number = 4", 1), "(top level)", "numbered"),
    (SHIPPED.replace("roll = { sets = 1", "rol = { sets = 1", 1), "(top level)",
     "unknown exercise rol"),
    (SHIPPED.replace("roll = { sets = 1", "roll = { sets = 0", 1), "levels.0.doses.roll.sets",
     "greater than or equal to 1"),
    (SHIPPED.replace("sets = 1, seconds = 60", "sets = 1, seconds = 60, reps = 3", 1),
     "levels.0.doses.roll", "exactly one of reps or seconds"),
    (SHIPPED.replace('id = "roll"', 'id = "roll"\ncolour = "red"', 1), "exercises.0.colour",
     "Extra inputs"),
    ("this is = = not toml", "not valid TOML", ""),
])
def test_bad_files_name_file_field_and_reason(tmp_path: Path, text: str, field: str,
                                              reason: str) -> None:
    path = _bad(tmp_path, text)
    with pytest.raises(ProgramError) as error:
        load_program(path)
    message = str(error.value)
    assert message.startswith(str(path)) and field in message and reason in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProgramError, match="cannot read"):
        load_program(tmp_path / "nope.toml")
