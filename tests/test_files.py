"""Atomic outputs: the target is the old file or the complete new one, with a new file's permissions."""

import os
import stat

import pytest

from syncnet.files import atomic_output


def test_the_output_replaces_the_target_with_the_umasks_permissions(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old")
    umask = os.umask(0o022)
    try:
        with atomic_output(target) as temporary:
            assert temporary.endswith(".csv") and os.path.dirname(temporary) == str(tmp_path)
            with open(temporary, "w") as file:
                file.write("new")
    finally:
        os.umask(umask)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            with open(temporary, "w") as file:
                file.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
