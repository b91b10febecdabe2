"""The in-sync / tampered verdict: fitted on real vs audio-swapped synthetic clips (each seed is a
different "speaker": its own syllable envelope and voice), and the statistics behind it."""

import json
import math

import numpy as np
import pytest
from synthetic import write_clip

from syncnet.calibrating import calibration_scores, summary_text
from syncnet.calibration import (
    SCORES,
    Calibration,
    equal_error_rate,
    fit_calibration,
    fit_logistic_slope,
    fit_threshold,
    load_calibration,
    roc_auc,
    save_calibration,
    score_value,
)
from syncnet.cli import main
from syncnet.errors import UserError
from syncnet.loading import save_model
from syncnet.scoring import score_video
from syncnet.speakers import DEFAULT_THRESHOLD, detect_speakers

SEEDS = (11, 12, 13, 14, 15, 16)  # none of trained_model.TRAIN_SEEDS: held-out speech


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    for seed in SEEDS:
        write_clip(folder / f"speaker_{seed}.mp4", seconds=3.0, seed=seed)
    return folder


@pytest.fixture(scope="module")
def scores(real_dir, trained_tiny_model):
    scores = calibration_scores(sorted(real_dir.glob("*.mp4")), trained_tiny_model, swaps=3)
    assert scores.skipped == []
    return scores


@pytest.fixture(scope="module")
def pair_scores(scores):
    return scores.in_sync, scores.tampered


@pytest.fixture(scope="module")
def model_path(trained_tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(trained_tiny_model, path)
    return path


def test_real_pairs_score_above_swapped_pairs(pair_scores):
    in_sync, tampered = pair_scores
    assert all(len(in_sync[name]) == len(SEEDS) and len(tampered[name]) == 3 * len(SEEDS) for name in SCORES)
    calibration = fit_calibration(in_sync, tampered)
    assert calibration.auc > 0.9, calibration
    assert calibration.auc == max(calibration.auc_by_score.values())
    real, swapped = np.array(in_sync[calibration.score]), np.array(tampered[calibration.score])
    assert np.median(real) > np.median(swapped)
    assert np.mean([calibration.in_sync(score) for score in real]) >= 0.8
    assert np.mean([not calibration.in_sync(score) for score in swapped]) >= 0.8
    assert calibration.tampered_likelihood(np.median(real)) < 0.5 < calibration.tampered_likelihood(np.median(swapped))


def test_pairs_are_scored_as_score_video_scores_them(real_dir, pair_scores, trained_tiny_model):
    in_sync, tampered = pair_scores
    first, second = sorted(real_dir.glob("*.mp4"))[:2]
    own = score_video(first, trained_tiny_model)
    swapped = score_video(first, trained_tiny_model, audio_path=second)  # the first swap of the first clip
    for name in SCORES:
        assert in_sync[name][0] == pytest.approx(score_value(own.best, name), abs=1e-4)
        assert tampered[name][0] == pytest.approx(score_value(swapped.best, name), abs=1e-4)


def test_score_video_gives_the_calibrated_verdict_and_tampered_likelihood(real_dir, pair_scores, trained_tiny_model, tmp_path):
    calibration = fit_calibration(*pair_scores, model="tiny")
    first, second = sorted(real_dir.glob("*.mp4"))[:2]
    uncalibrated = score_video(first, trained_tiny_model)
    assert uncalibrated.tampered is None and uncalibrated.to_dict()["tampered"] is None

    own = score_video(first, trained_tiny_model, calibration=calibration)
    swapped = score_video(first, trained_tiny_model, audio_path=second, calibration=calibration)
    at_zero = score_video(first, trained_tiny_model, audio_path=second, calibration=calibration, vshift=0)
    for result in (own, swapped, at_zero):
        score = calibration.score_of(result.best)
        assert result.tampered == pytest.approx(calibration.tampered_likelihood(score))
        # one verdict: the printed likelihood never contradicts it
        assert result.in_sync == (abs(result.offset_frames) <= 1 and calibration.in_sync(score))
        assert result.in_sync == (abs(result.offset_frames) <= 1 and result.tampered < 0.5)
        assert f"P(tampered) {result.tampered:.3f}" in result.verdict_reason
    assert own.tampered < 0.5 < swapped.tampered
    assert own.verdict_reason == f"P(tampered) {own.tampered:.3f} < 0.5"
    assert uncalibrated.verdict_reason.startswith("LSE-C ")
    assert json.loads(json.dumps(swapped.to_dict()))["tampered"] == pytest.approx(swapped.tampered)

    # a model carries its calibration (load_model attaches the shipped expert's); a path works too
    save_calibration(calibration, tmp_path / "calibration.json")
    trained_tiny_model.calibration = calibration
    try:
        assert score_video(first, trained_tiny_model, audio_path=second).tampered == pytest.approx(swapped.tampered)
    finally:
        trained_tiny_model.calibration = None
    assert score_video(first, trained_tiny_model, calibration=tmp_path / "calibration.json").tampered == pytest.approx(own.tampered)


def test_the_speakers_threshold_is_fitted_on_faces_under_their_own_and_swapped_audio(scores, real_dir, trained_tiny_model):
    calibration = fit_calibration(scores.in_sync, scores.tampered, speaking=scores.speaking, not_speaking=scores.not_speaking)
    threshold = calibration.speaking_threshold
    speaking, not_speaking = np.asarray(scores.speaking), np.asarray(scores.not_speaking)
    assert len(speaking) > 6 * 50 and len(not_speaking) > 3 * len(speaking) * 0.9  # every frame of every pair
    assert np.mean(speaking > threshold) > 0.8 and np.mean(not_speaking > threshold) < 0.2
    # `syncnet speakers` takes a model's calibrated threshold unless given one
    first = sorted(real_dir.glob("*.mp4"))[0]
    assert detect_speakers(first, trained_tiny_model).threshold == DEFAULT_THRESHOLD
    trained_tiny_model.calibration = calibration
    try:
        assert detect_speakers(first, trained_tiny_model).threshold == threshold
        assert detect_speakers(first, trained_tiny_model, threshold=0.9).threshold == 0.9
    finally:
        trained_tiny_model.calibration = None


def test_calibration_json_round_trips(pair_scores, tmp_path):
    calibration = fit_calibration(*pair_scores, model="tiny.keras")
    path = tmp_path / "calibration.json"
    save_calibration(calibration, path)
    assert load_calibration(path) == calibration
    assert json.loads(path.read_text())["score"] in SCORES
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.json"]  # no temporary file left


def test_command_line_writes_the_calibration(real_dir, model_path, tmp_path, capsys):
    two = tmp_path / "two"
    two.mkdir()
    for seed in SEEDS[:2]:
        (two / f"speaker_{seed}.mp4").symlink_to(real_dir / f"speaker_{seed}.mp4")
    output = tmp_path / "calibration.json"
    assert main(["calibrate", str(two), "--model", str(model_path), "-o", str(output), "--swaps", "3"]) == 0
    calibration = load_calibration(output)
    assert (calibration.num_real, calibration.num_swapped) == (2, 2)  # 3 swaps asked, 1 other clip there
    assert calibration.chance_confidence > 0  # where the swapped pairs' best offsets land: monitor's and speakers' bar
    assert calibration.model == str(model_path)
    assert str(output) in capsys.readouterr().out

    video = str(two / f"speaker_{SEEDS[0]}.mp4")
    assert main(["score", video, "--model", str(model_path), "--calibration", str(output), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert 0.0 <= scored["tampered"] <= 1.0
    assert calibration.speaking_threshold is not None and "syncnet speakers" in summary_text(calibration, output)
    assert main(["speakers", video, "--model", str(model_path), "--calibration", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == pytest.approx(calibration.speaking_threshold)
    assert main(["score", video, "--model", str(model_path), "--calibration", str(tmp_path / "none.json")]) == 1
    assert capsys.readouterr().err.startswith("syncnet score: error: ")


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.mp4": None}, "need at least 2 real clips"),
        ({}, "need at least 2 real clips"),
        ({"a.mp4": b"not a video", "b.mp4": b"nor this"}, "need at least 2 usable real clips, got 0 of 2"),
    ],
)
def test_bad_folders_are_one_line_errors(files, message, real_dir, model_path, tmp_path, capsys):
    for name, content in files.items():
        if content is None:
            (tmp_path / name).symlink_to(real_dir / f"speaker_{SEEDS[0]}.mp4")
        else:
            (tmp_path / name).write_bytes(content)
    assert main(["calibrate", str(tmp_path), "--model", str(model_path), "-o", str(tmp_path / "c.json")]) == 1
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not (tmp_path / "c.json").exists()


def test_a_speaking_threshold_that_is_not_a_number_is_refused(pair_scores, tmp_path):
    data = {**fit_calibration(*pair_scores).to_dict(), "speaking_threshold": float("nan")}
    (tmp_path / "nan.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="speaking_threshold must be a finite number"):
        load_calibration(tmp_path / "nan.json")


def test_load_calibration_rejects_other_files(tmp_path):
    path = tmp_path / "c.json"
    good = fit_calibration({name: [3.0, 4.0] for name in SCORES}, {name: [0.0, 1.0] for name in SCORES}).to_dict()
    for text, message in [
        ("{oops", "not a calibration file"),
        ("[1, 2]", "not a calibration file"),
        ('{"version": 99}', "unsupported calibration version"),
        ('{"version": 1}', "missing"),
        (json.dumps({**good, "threshold": "high"}), "threshold must be a finite number"),
        (json.dumps({**good, "score": "lse_d"}), "is not one of"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_calibration(path)
    with pytest.raises(FileNotFoundError, match="no such calibration file"):
        load_calibration(tmp_path / "absent.json")


def test_statistics_on_known_distributions():
    assert roc_auc([2, 3], [0, 1]) == 1.0 and roc_auc([0, 1], [2, 3]) == 0.0 and roc_auc([1, 1], [1, 1]) == 0.5
    assert equal_error_rate([2, 3], [0, 1]) == 0.0 and equal_error_rate([1, 2], [1, 2]) == 0.5
    rng = np.random.default_rng(0)
    real, swapped = rng.normal(1, 1, 4000), rng.normal(-1, 1, 12000)  # d' = 2
    normal_cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    assert roc_auc(real, swapped) == pytest.approx(normal_cdf(math.sqrt(2)), abs=0.01)
    assert equal_error_rate(real, swapped) == pytest.approx(normal_cdf(-1), abs=0.01)
    assert fit_threshold(real, swapped) == pytest.approx(0.0, abs=0.1)  # balanced: halfway between the means
    # at most 5 % of real clips called tampered: the threshold sits at the real scores' 5th percentile
    assert fit_threshold(real, swapped, false_alarm=0.05) == pytest.approx(1 - 1.645, abs=0.1)
    # equal variances: log-odds linear through the midpoint 0, slope -(1 - -1) / 1
    assert fit_logistic_slope(real, swapped, threshold=0.0) == pytest.approx(-2.0, abs=0.15)


def test_the_likelihood_agrees_with_the_verdict_and_old_files_load_recentred():
    rng = np.random.default_rng(1)
    real, swapped = rng.normal(1, 0.5, 30), rng.normal(-0.5, 1.5, 90)  # unequal spreads
    calibration = fit_calibration({name: real for name in SCORES}, {name: swapped for name in SCORES})
    for score in np.linspace(-4, 3, 141):
        assert calibration.in_sync(score) == (calibration.tampered_likelihood(score) < 0.5) == (score > calibration.threshold)
    assert calibration.tampered_likelihood(calibration.threshold) == pytest.approx(0.5)
    old = {**calibration.to_dict(), "version": 1, "logistic_intercept": 3.0}
    assert Calibration.from_dict(old) == calibration


def test_logistic_stays_finite_when_the_labels_do_not_overlap():
    calibration = fit_calibration({name: [3.0, 4.0, 5.0] for name in SCORES}, {name: [0.0, 1.0, 2.0] for name in SCORES})
    assert calibration.threshold == 2.5 and calibration.auc == 1.0 and calibration.eer == 0.0
    assert np.isfinite(calibration.logistic_slope) and calibration.logistic_slope < 0
    assert calibration.tampered_likelihood(0.0) > 0.5 > calibration.tampered_likelihood(5.0)
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration


def test_a_rising_logistic_or_inverted_labels_are_refused():
    """P(tampered) must fall as the in-sync score rises: a file with slope >= 0 would print verdicts
    against their own likelihood, and labels that separate backwards are not a calibration."""
    good = fit_calibration({name: [3.0, 4.0, 5.0] for name in SCORES}, {name: [0.0, 1.0, 2.0] for name in SCORES})
    with pytest.raises(UserError, match="logistic_slope must be negative"):
        Calibration.from_dict({**good.to_dict(), "logistic_slope": 0.4})
    with pytest.raises(UserError, match="no score tells the real clips from the swapped ones"):
        fit_calibration({name: [0.0, 1.0, 2.0] for name in SCORES}, {name: [3.0, 4.0, 5.0] for name in SCORES})


def test_calibrate_into_a_model_keeps_the_verdict_inside_the_file(real_dir, model_path, tmp_path, capsys):
    two = tmp_path / "two"
    two.mkdir()
    for seed in SEEDS[:2]:
        (two / f"speaker_{seed}.mp4").symlink_to(real_dir / f"speaker_{seed}.mp4")
    assert main(["calibrate", str(two), "--model", str(model_path), "-o", str(tmp_path / "c.json"), "--into", str(tmp_path / "c.txt")]) == 1
    assert "--into takes a .keras file" in capsys.readouterr().err
    calibrated = tmp_path / "calibrated.keras"
    args = ["calibrate", str(two), "--model", str(model_path), "-o", str(tmp_path / "c.json"), "--swaps", "1", "--into", str(calibrated)]
    assert main(args) == 0
    capsys.readouterr()
    from syncnet.loading import load_model

    written = load_model(calibrated)
    assert written.calibration == load_calibration(tmp_path / "c.json")
    head = written.calibration.sync_head  # fitted on the pairs' windows, and written into the model
    assert head["scale"] > 0 and float(written.head.scale) == pytest.approx(head["scale"], rel=1e-5)
    assert float(written.head.bias) == pytest.approx(head["bias"], rel=1e-5)
    video = str(two / f"speaker_{SEEDS[0]}.mp4")
    assert main(["score", video, "--model", str(calibrated), "--json"]) == 0  # no --calibration: the file's own
    assert json.loads(capsys.readouterr().out)["tampered"] is not None


def test_sync_head_fit_recovers_a_known_logistic():
    """Two unit-variance Gaussians at 6 (in sync) and 9 (swapped), equally weighted: the true
    log-odds are (45 - 6 d) / 2, a scale of 3 and a bias of 22.5."""
    from syncnet.calibration import fit_sync_head

    rng = np.random.default_rng(0)
    head = fit_sync_head(rng.normal(6, 1, 20000), rng.normal(9, 1, 60000))
    assert head["scale"] == pytest.approx(3.0, rel=0.05) and head["bias"] == pytest.approx(22.5, rel=0.05)
    with pytest.raises(ValueError, match="both labels"):
        fit_sync_head([], [1.0])
