"""syncnet.scoring: syncnet_python's numbers, offsets found on real encoded clips, bad inputs, JSON/CSV, CLI.

Sign convention under test: a clip whose audio is DELAYED by k frames (write_clip(audio_shift_frames=k))
is reported at offset -k; offset > 0 means the audio leads the video.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from shared_data import shared_clip
from synthetic import speech_audio, speech_envelope, write_clip, write_frames

from syncnet import hyperparameters as hp
from syncnet.loading import default_model_path
from syncnet.models import build_model
from syncnet.offsets import score_windows, search_offset
from syncnet.scoring import score_media, score_video
from syncnet.speakers import DEFAULT_THRESHOLD, speaking_threshold
from syncnet.video import load_media

REPO = Path(__file__).resolve().parents[1]
CONTRACT = {
    "video": str,
    "status": str,
    "error": (str, type(None)),
    "offset_frames": int,
    "offset_seconds": float,
    "min_dist": float,
    "confidence": float,
    "sync_probability": float,
    "in_sync": bool,
    "tampered": (float, type(None)),
    "frames": int,
    "face_tracks": int,
    "model": str,
    "tracks": list,
}
TEST_SEED = 5  # not one of trained_model.TRAIN_SEEDS: speech the model never saw


# --- syncnet_python's arithmetic -------------------------------------------------------------


def calc_pdist_literal(feat1, feat2, vshift):
    """syncnet_python's calc_pdist, line for line in numpy (torch's pairwise_distance: ||a - b + 1e-6||)."""
    win_size = vshift * 2 + 1
    feat2p = np.pad(feat2, ((vshift, vshift), (0, 0)))
    dists = []
    for i in range(len(feat1)):
        difference = np.repeat(feat1[[i], :], win_size, axis=0) - feat2p[i : i + win_size, :] + 1e-6
        dists.append(np.linalg.norm(difference, axis=1))
    return dists


def test_score_windows_pairs_frame_i_with_audio_i_plus_offset_and_zero_padding():
    frames = np.array([[1.0], [2.0]])
    audio = np.array([[10.0], [20.0]])
    eps = 1e-6
    expected = [
        [abs(1 - 0 + eps), abs(1 - 10 + eps), abs(1 - 20 + eps)],  # audio windows -1 (padding), 0, 1
        [abs(2 - 10 + eps), abs(2 - 20 + eps), abs(2 - 0 + eps)],  # audio windows 0, 1, 2 (padding)
    ]
    np.testing.assert_allclose(score_windows(frames, audio, vshift=1), expected, rtol=1e-6)


def test_score_windows_matches_calc_pdist():
    rng = np.random.default_rng(0)
    frames, audio = rng.normal(size=(40, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(np.float32)
    np.testing.assert_allclose(score_windows(frames, audio, 15), np.stack(calc_pdist_literal(frames, audio, 15)), rtol=1e-5)


def test_search_offset_is_evaluate_and_finds_a_delayed_audio_at_minus_k():
    from scipy.signal import medfilt

    rng = np.random.default_rng(1)
    frames = rng.normal(size=(60, 8)).astype(np.float32)
    k = 4  # audio window i + k carries what frame window i shows: the audio is 4 frames late
    audio = np.concatenate([rng.normal(size=(k, 8)), frames[:-k]]).astype(np.float32) + 0.1 * rng.normal(size=(60, 8)).astype(np.float32)
    distances = score_windows(frames, audio, vshift=10)
    search = search_offset(distances)

    mdist = np.stack(calc_pdist_literal(frames, audio, 10), 1).mean(axis=1)  # evaluate(), literally
    minidx = int(np.argmin(mdist))
    assert search.offset == 10 - minidx == -k
    assert search.min_dist == pytest.approx(mdist[minidx], rel=1e-5)
    assert search.confidence == pytest.approx(np.median(mdist) - mdist[minidx], rel=1e-4)
    fconf = np.median(mdist) - np.stack(calc_pdist_literal(frames, audio, 10))[:, minidx]
    np.testing.assert_allclose(search.frame_confidence, medfilt(fconf, kernel_size=9), rtol=1e-4, atol=1e-5)


# --- offsets on encoded clips, with the tiny expert trained on synthetic speech -----------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scoring_clips")

    def clip(name, **options):
        path = folder / name
        if not path.exists():
            write_clip(path, **{"seconds": 3.0, "seed": TEST_SEED, **options})
        return path

    return clip


@pytest.mark.parametrize("delay", [0, 3, -4])
def test_detected_offset_moves_by_exactly_the_applied_audio_delay(trained_tiny_model, clips, delay):
    result = score_video(clips(f"delay_{delay}.mp4", audio_shift_frames=delay), trained_tiny_model)
    assert result.status == "ok", result.error
    assert result.offset_frames == -delay  # audio k frames late -> offset -k
    assert result.offset_seconds == pytest.approx(-delay / hp.VIDEO_FPS)
    assert result.frames == 75 and len(result.tracks) == 1 and result.warnings == []
    assert result.in_sync == (delay == 0)
    # the head agrees: P(in sync) at the found offset beats P(in sync) at offset 0 when they differ
    if delay:
        assert result.sync_probability > result.sync_probability_at_zero + 0.1


def test_score_media_scores_frames_held_in_memory_as_score_video_scores_the_file(trained_tiny_model, clips):
    clip = clips("delay_3.mp4", audio_shift_frames=3)
    media = load_media(clip)

    class InMemory:  # what a live-stream chunk offers: no file behind the frames
        path, audio, num_frames = "chunk 0", media.audio, media.num_frames
        frames_held = {gray: list(media.frames(gray=gray)) for gray in (False, True)}

        def frames(self, gray=False):
            return iter(self.frames_held[gray])

    from_memory = score_media(InMemory(), trained_tiny_model)
    from_file = score_video(clip, trained_tiny_model)
    assert from_memory.video == "chunk 0" and from_memory.offset_frames == from_file.offset_frames == -3
    assert from_memory.min_dist == pytest.approx(from_file.min_dist, rel=1e-5)
    assert from_memory.confidence == pytest.approx(from_file.confidence, rel=1e-5)


def test_audio_of_another_clip_scores_lower_and_out_of_sync(trained_tiny_model, clips):
    video = clips("delay_0.mp4", audio_shift_frames=0)
    own = score_video(video, trained_tiny_model)
    dubbed = score_video(video, trained_tiny_model, audio_path=clips("other_speech.mp4", seed=TEST_SEED + 1))
    assert dubbed.status == "ok", dubbed.error
    assert dubbed.confidence < own.confidence / 2
    assert dubbed.sync_probability < own.sync_probability
    assert not dubbed.in_sync


def test_each_face_is_a_track_and_the_talking_one_is_reported(trained_tiny_model, clips):
    result = score_video(clips("two_faces.mp4", size=(448, 224), faces=(True, False), audio_shift_frames=3), trained_tiny_model)
    assert result.status == "ok", result.error
    assert len(result.tracks) == 2
    talking, still = sorted(result.tracks, key=lambda track: -track.confidence)
    assert result.best is talking and result.offset_frames == talking.offset_frames == -3
    assert still.confidence < talking.confidence / 2
    assert len(talking.frame_confidence) == 75 - hp.WINDOW_FRAMES  # syncnet_python's windows


def test_a_clip_shorter_than_the_search_range_searches_what_fits_and_says_so(trained_tiny_model, clips):
    result = score_video(clips("short.mp4", seconds=0.6), trained_tiny_model, vshift=15)  # 15 frames
    assert result.status == "ok", result.error
    track = result.best
    assert track.vshift == 15 - hp.WINDOW_FRAMES - 1  # 10 windows: offsets -9..9 each pair real audio
    assert len(track.mean_distance) == 2 * track.vshift + 1
    assert len(result.warnings) == 1 and "searched +-9" in result.warnings[0]
    assert result.to_dict()["warnings"] == result.warnings


# --- bad inputs: an error result with a one-line reason, never an exception --------------------


def silent_clip(path):
    """A face with an all-zero audio track."""
    source = path.with_name("face_only.mp4")
    write_clip(source, seconds=2.0, with_audio=False)
    with av.open(str(source)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    write_frames(path, frames, audio=np.zeros(32000, np.float32))
    return path


def faceless_clip(path):
    gray = np.full((224, 224, 3), 110, np.uint8)
    write_frames(path, [gray] * 50, audio=speech_audio(speech_envelope(50)))
    return path


def truncated_clip(path, source):
    data = Path(source).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS = {
    "missing": (lambda tmp, clips: tmp / "nope.mp4", "no such file"),
    "not a video": (lambda tmp, clips: _write(tmp / "notes.mp4", b"just some text, not a video\n" * 20), "not a media file"),
    "no audio track": (lambda tmp, clips: clips("mute.mp4", with_audio=False), "no audio track"),
    "silent audio": (lambda tmp, clips: silent_clip(tmp / "silent.mp4"), "silent"),
    "no face": (lambda tmp, clips: faceless_clip(tmp / "faceless.mp4"), "no face"),
    "4 frames": (lambda tmp, clips: clips("four_frames.mp4", seconds=0.16), "need at least"),
    "5 frames": (lambda tmp, clips: clips("five_frames.mp4", seconds=0.2), "need at least 6"),
    "corrupt container": (lambda tmp, clips: truncated_clip(tmp / "truncated.mp4", clips("delay_0.mp4")), "not a media file"),
}


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_an_error_result_with_a_one_line_reason(clips, tmp_path, case):
    make, reason = BAD_INPUTS[case]
    path = make(tmp_path, clips)
    result = score_video(path, build_model("tiny"))  # the input fails before the weights matter
    assert result.status == "error"
    assert reason in result.error and "\n" not in result.error
    out = json.loads(json.dumps(result.to_dict()))
    assert out["status"] == "error" and out["error"] == result.error and out["tracks"] == []
    for name in ("offset_frames", "offset_seconds", "min_dist", "confidence", "sync_probability", "in_sync"):
        assert out[name] is None


# --- the JSON contract ---------------------------------------------------------------------------


def test_result_dict_follows_the_json_contract(trained_tiny_model, clips):
    result = score_video(clips("delay_3.mp4", audio_shift_frames=3), trained_tiny_model)
    out = json.loads(json.dumps(result.to_dict()))
    for key, kind in CONTRACT.items():
        assert isinstance(out[key], kind), (key, out[key])
    assert out["status"] == "ok" and out["error"] is None and out["face_tracks"] == 1
    assert out["model"] == trained_tiny_model.name
    track = out["tracks"][0]
    assert track["offset_frames"] == out["offset_frames"] and len(track["mean_distance"]) == 31
    assert "frame_confidence" in result.to_dict(per_frame=True)["tracks"][0]


# --- the command line, in a subprocess as a user runs it ---------------------------------------


def run_cli(*args, cwd):
    # TensorFlow's log level as a user has it: the CLI itself must keep its C++ log off stderr
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "syncnet.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def model_file(trained_tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    trained_tiny_model.save(path)
    return path


def test_cli_scores_a_batch_to_json_csv_and_plots_and_fails_on_one_bad_video(model_file, clips, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a_delayed.mp4").write_bytes(clips("delay_3.mp4", audio_shift_frames=3).read_bytes())
    (folder / "b_broken.mp4").write_bytes(b"not a video at all")
    (folder / "readme.txt").write_text("not a video suffix: not scored")
    table = tmp_path / "scores.csv"
    run = run_cli("score", folder, "--json", "--csv", table, "--model", model_file, "--plot", tmp_path / "plot.png", cwd=tmp_path)

    assert run.returncode == 1, run.stderr  # one video could not be scored
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(line["video"]).name for line in lines] == ["a_delayed.mp4", "b_broken.mp4"]
    good, bad = lines
    assert good["status"] == "ok" and good["offset_frames"] == -3 and good["model"] == str(model_file)
    assert bad["status"] == "error" and bad["offset_frames"] is None and "b_broken.mp4" in bad["error"]

    rows = list(csv.DictReader(table.open()))
    assert [row["status"] for row in rows] == ["ok", "error", "summary"]
    assert int(rows[0]["offset_frames"]) == -3 and rows[1]["min_dist"] == ""
    assert float(rows[2]["min_dist"]) == pytest.approx(good["min_dist"], rel=1e-6)  # mean over scored videos
    assert float(rows[2]["confidence"]) == pytest.approx(good["confidence"], rel=1e-6)
    assert not list(tmp_path.glob(".scores.csv*")), "temporary file left behind"
    assert (tmp_path / "plot_a_delayed.png").stat().st_size > 10_000
    assert good["plot"] == str(tmp_path / "plot_a_delayed.png")  # where each video's figure went
    assert not (tmp_path / "plot_b_broken.png").exists() and "plot" not in bad


def test_cli_human_line_and_exit_0_when_every_video_scores(model_file, clips, tmp_path):
    run = run_cli("score", clips("delay_0.mp4", audio_shift_frames=0), "--model", model_file, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1
    assert "offset +0 frames" in run.stdout and "in sync" in run.stdout and "NOT" not in run.stdout
    assert run.stderr == ""


def test_cli_human_mode_prints_results_on_stdout_and_errors_one_line_each_on_stderr(model_file, clips, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    plot = tmp_path / "figure.png"
    run = run_cli(
        "score", clips("delay_0.mp4", audio_shift_frames=0), tmp_path / "broken.mp4", "--model", model_file, "--plot", plot, cwd=tmp_path
    )
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"{tmp_path / 'broken.mp4'}: error: not a media file")
    scored, plotted = run.stdout.splitlines()
    assert "delay_0.mp4: offset +0 frames" in scored and plotted == f"  plot: {tmp_path / 'figure_delay_0.png'}"


def test_cli_missing_input_or_bad_destination_fails_fast_without_tensorflow(clips, tmp_path):
    """Checked before anything heavy loads (`bench/bench_cli_start.py` times it)."""
    probe = (
        "import sys; from syncnet.cli import main; code = main(sys.argv[1:]); "
        "print('tensorflow' in sys.modules, file=sys.stderr); sys.exit(code)"
    )

    def run(*args):
        return subprocess.run(
            [sys.executable, "-c", probe, *map(str, args)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )

    missing = run("score", tmp_path / "missing.mp4")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == f"{tmp_path / 'missing.mp4'}: error: no such file\nFalse\n"
    video = clips("delay_0.mp4", audio_shift_frames=0)
    for args, message in [
        (("score", video, "--csv", tmp_path / "nowhere" / "t.csv"), f"{tmp_path / 'nowhere'}: no such folder"),
        (("score", video, "--plot", tmp_path), f"{tmp_path}: is a folder"),
        (("fix", video, "-o", tmp_path / "nowhere" / "fixed.mp4"), f"{tmp_path / 'nowhere'}: no such folder"),
        (("speakers", tmp_path / "missing.mp4"), "no such file"),
    ]:
        failed = run(*args)
        assert failed.returncode == 1 and failed.stdout == "", args
        error, imported = failed.stderr.splitlines()
        assert message in error and error.startswith(f"syncnet {args[0]}: error: "), (args, error)
        assert imported == "False", args


def test_cli_bad_model_or_option_is_one_line_on_stderr_and_exit_1(clips, tmp_path):
    run = run_cli("score", clips("delay_0.mp4", audio_shift_frames=0), "--model", tmp_path / "missing.keras", cwd=tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("syncnet score: error: model file not found")


def test_the_shipped_expert_loads_with_its_calibration_and_scores_by_default(clips, tmp_path):
    from syncnet import load_model
    from syncnet.calibration import load_calibration
    from syncnet.loading import default_calibration_path

    model = load_model()
    assert model.preset == "paper" and all(w.dtype == "float32" for w in model.weights)
    assert model.calibration == load_calibration(default_calibration_path())
    assert default_model_path().stat().st_size < 4 * 2**20  # a few MB, float16 storage
    run = run_cli("score", clips("delay_0.mp4", audio_shift_frames=0), "--json", cwd=tmp_path)
    result = json.loads(run.stdout)
    assert run.returncode == 0 and result["status"] == "ok" and result["model"] == "default"
    assert result["tampered"] is not None  # the shipped calibration's P(tampered)
    # and `syncnet speakers`' threshold, fitted on real footage by `syncnet calibrate`
    assert 0 < model.calibration.speaking_threshold < DEFAULT_THRESHOLD
    assert speaking_threshold(model) == model.calibration.speaking_threshold


# --- the real clips (research data, skipped when absent) -----------------------------------------


def test_real_clip_runs_through_the_pipeline(trained_tiny_model):
    # numbers from a model trained on synthetic faces mean nothing here; the pipeline must still hold
    clip = shared_clip("*Pose_Source_620900105.mp4")  # 4.4 s, 224 px VoxCeleb crop
    result = score_video(clip, trained_tiny_model)
    assert result.status == "ok", result.error
    assert result.frames == load_media(clip).num_frames and result.tracks
    assert all(track.vshift == 15 and np.all(np.isfinite(track.mean_distance)) for track in result.tracks)


@pytest.mark.parametrize("delay, expected", [(0, 3), (5, -2), (12, -9)])
def test_default_model_finds_the_shared_clips_offsets(delay, expected):
    # syncnet_python reports 3 for data_example.avi; its audio delayed by 5 and 12 frames gives -2, -9
    clip = shared_clip(f"*demo_output_test_offset_{delay}.avi")
    if not default_model_path().is_file():
        pytest.skip("the default model is not installed in syncnet/weights yet")
    result = score_video(clip)
    assert result.status == "ok", result.error
    assert abs(result.offset_frames - expected) <= 1


def test_short_tracks_and_file_names_in_other_scripts_print_no_library_warnings():
    """A clean run prints results only: no scipy 'kernel_size exceeds volume extent' for a track
    with fewer windows than the 9-frame median filter, no matplotlib 'Glyph missing' for a CJK title."""
    import io
    import warnings

    from syncnet.scoring import ScoreResult, TrackScore, plot_result

    distances = np.random.default_rng(0).random((4, 31)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search = search_offset(distances)
        track = TrackScore(
            track_id=0, start_frame=0, num_frames=9, vshift=15, offset_frames=search.offset, min_dist=search.min_dist,
            confidence=search.confidence, sync_probability=0.5, sync_probability_at_zero=0.5, in_sync=False,
            verdict_reason="LSE-C 0.10 <= 1.5", tampered=None, mean_distance=search.mean_distance,
            frame_confidence=search.frame_confidence,
        )  # fmt: skip
        png = io.BytesIO()
        plot_result(ScoreResult(video="会議の録画.mp4", model="tiny", tracks=[track]), png)
    assert len(search.frame_confidence) == 4 and png.getvalue().startswith(b"\x89PNG")
