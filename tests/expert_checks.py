"""Checks every converted expert family's tests share: a calibration to round-trip, and a
checkpoint `convert-weights` must refuse in one line with nothing written."""

from syncnet.calibration import Calibration
from syncnet.cli import main


def example_calibration() -> Calibration:
    return Calibration(
        score="confidence",
        threshold=0.05,
        logistic_slope=-30.0,
        auc=0.9,
        eer=0.1,
        balanced_accuracy=0.9,
        false_alarm_rate=0.1,
        miss_rate=0.1,
        num_real=20,
        num_swapped=20,
        speaking_threshold=0.02,
    )


def refused(capsys, tmp_path, source, *expected) -> str:
    """`syncnet convert-weights source` exits 1 with one line holding each of `expected`, writing nothing."""
    out = tmp_path / "out" / "expert.keras"
    out.parent.mkdir(exist_ok=True)
    assert main(["convert-weights", str(source), str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    for text in expected:
        assert text in error, error
    assert list(out.parent.iterdir()) == []
    return error
