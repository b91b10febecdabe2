"""What a new user trips on in the first hour (issue 23): Ctrl-C, install names, `python -m syncnet`,
and the smaller things. Each command runs in a subprocess, as a user runs it; Ctrl-C is a real SIGINT."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_clip

REPO = Path(__file__).resolve().parents[1]


def environment():
    # TensorFlow's log level as a user has it: the package itself keeps its C++ log off stderr
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    return env


def syncnet(*args, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "syncnet", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=environment(), timeout=timeout
    )


def interrupted(*args, cwd, when):
    """Run `python -m syncnet ARGS`, send it SIGINT once `when(first_stdout_line)` is true (checked
    after each line it prints), and return (exit code, stdout, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "syncnet", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=environment(),
    )
    printed = ""
    for line in process.stdout:
        printed += line
        if when(printed):
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return process.returncode, printed + out, err


@pytest.fixture(scope="module")
def talking_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "talk.mp4"
    write_clip(path, seconds=6.0, seed=7)
    return path


# --- Ctrl-C ---------------------------------------------------------------------------------------


def test_ctrl_c_during_a_batch_exits_130_with_every_finished_result_written(talking_clip, tmp_path):
    videos = []
    for number in range(6):
        videos.append(tmp_path / f"clip_{number}.mp4")
        videos[-1].write_bytes(talking_clip.read_bytes())
    table = tmp_path / "t.csv"
    code, out, err = interrupted("score", *videos, "--json", "--csv", table, cwd=tmp_path, when=lambda printed: printed.count("\n") >= 1)

    assert code == 130, err  # not -6: "terminate called without an active exception"
    assert "terminate called" not in err and err.endswith("syncnet: interrupted\n"), err
    finished = [json.loads(line) for line in out.splitlines()]  # each line whole: flushed as its video ended
    assert 1 <= len(finished) < len(videos)
    rows = list(csv.DictReader(table.open()))
    assert [row["video"] for row in rows[:-1]] == [result["video"] for result in finished]
    assert rows[-1]["video"] == f"MEAN ({len(finished)} of {len(finished)} scored; stopped after {len(finished)} of 6 videos)"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []  # no temporary file left


def test_a_producer_left_running_is_stopped_and_closed_before_the_interpreter_exits(tmp_path):
    """A consumer interrupted by Ctrl-C leaves its ReadAhead unstopped. Its thread must end before
    finalization, which would otherwise kill it wherever it is - inside dlib or FFmpeg, an abort."""
    script = (
        "import time\n"
        "from syncnet.background import ReadAhead\n"
        "def items():\n"
        "    try:\n"
        "        while True:\n"
        "            time.sleep(0.01)\n"
        "            yield 1\n"
        "    finally:\n"
        "        print('producer closed', flush=True)\n"
        "for item in ReadAhead(items(), depth=2):\n"
        "    break\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=60)
    assert run.returncode == 0 and run.stdout == "producer closed\n", run.stderr


def test_python_m_syncnet_is_the_syncnet_command(tmp_path):
    run = syncnet("--version", cwd=tmp_path, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("syncnet "), run.stderr


def test_import_syncnet_in_a_script_keeps_tensorflows_log_quiet_unless_the_user_set_its_level(tmp_path):
    script = "import os, syncnet; syncnet.load_model(); print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == "3\n", quiet.stderr  # no "failed call to cuInit"
    chosen = subprocess.run(
        [sys.executable, "-c", "import os, syncnet; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**environment(), "TF_CPP_MIN_LOG_LEVEL": "1"},
        timeout=120,
    )
    assert chosen.returncode == 0 and chosen.stdout == "1\n", chosen.stderr


# --- score: the CSV's warnings, the plot's format, the top level's track, unreadable files -----


def scored(video="talk.mp4", warnings=(), track_ids=(0,)):
    from syncnet.scoring import ScoreResult, TrackScore

    tracks = [
        TrackScore(
            track_id=track_id,
            start_frame=0,
            num_frames=50,
            vshift=2,
            offset_frames=0,
            min_dist=7.0,
            confidence=1.0 + track_id,  # the last track is the most confident: the best
            sync_probability=0.6,
            sync_probability_at_zero=0.6,
            in_sync=True,
            verdict_reason="P(tampered) 0.01 < 0.5",
            tampered=0.01,
            mean_distance=np.array([8.0, 7.5, 7.0, 7.5, 8.0]),
            frame_confidence=np.ones(46),
        )
        for track_id in track_ids
    ]
    return ScoreResult(video=video, model="default", frames=50, tracks=tracks, warnings=list(warnings))


def test_the_csv_keeps_each_videos_warnings(tmp_path):
    from syncnet.scoring import write_csv

    table = tmp_path / "t.csv"
    write_csv([scored("half.mp4", ["truncated: 3.0 s of 10.0 s decode", "audio at 8000 Hz"]), scored("whole.mp4")], table)
    rows = list(csv.DictReader(table.open()))
    assert [row["warnings"] for row in rows] == ["truncated: 3.0 s of 10.0 s decode; audio at 8000 Hz", "", ""]


def test_the_json_top_level_names_the_track_its_numbers_are_from():
    result = scored(track_ids=(0, 1, 2)).to_dict()
    assert result["track_id"] == 2 and result["confidence"] == result["tracks"][2]["confidence"]
    assert scored(track_ids=()).to_dict()["track_id"] is None


@pytest.mark.parametrize("name, magic", [("plot.jpg", b"\xff\xd8\xff"), ("plot.png", b"\x89PNG"), ("plot.svg", b"<?xml")])
def test_plot_writes_the_format_its_name_says(tmp_path, name, magic):
    from syncnet.scoring import plot_result

    plot_result(scored(), tmp_path / name)
    assert (tmp_path / name).read_bytes().startswith(magic)


def test_score_refuses_a_plot_format_it_cannot_write_and_fails_fast_on_files_that_are_not_videos(talking_clip, tmp_path):
    probe = (
        "import sys; from syncnet.cli import main; code = main(sys.argv[1:]); "
        "print('tensorflow' in sys.modules, file=sys.stderr); sys.exit(code)"
    )

    def run(*args):
        return subprocess.run(
            [sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=60
        )

    gif = run("score", talking_clip, "--plot", tmp_path / "plot.gif")
    assert (
        gif.returncode == 1
        and gif.stderr == f"syncnet score: error: --plot {tmp_path / 'plot.gif'}: name a .png, .jpg, .svg or .pdf file\nFalse\n"
    )
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("meeting notes, not a video\n")
    unreadable = run("score", tmp_path / "empty.mp4", tmp_path / "notes.mp4")
    assert unreadable.returncode == 1 and unreadable.stdout == ""
    *errors, imported = unreadable.stderr.splitlines()
    assert [error.split(": error: ")[0] for error in errors] == [str(tmp_path / "empty.mp4"), str(tmp_path / "notes.mp4")]
    assert imported == "False"  # the model was never loaded for them: TensorFlow not even imported


# --- install names ----------------------------------------------------------------------------


def pinned(requirements: Path) -> dict:
    """name -> version of every `name==version` line in a requirements file and the constraint files
    it names (`-c FILE`)."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-c "):
            pins.update(pinned(requirements.parent / line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_pip_install_r_requirements_txt_asks_for_nothing_that_conflicts():
    """vvadlrs3 0.2.0 pinned beside Keras 3 made `pip install -r requirements.txt` fail: its metadata
    wants keras==2.4.3. No pinned package may require another at a version other than its pin."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = pinned(REPO / "requirements.txt")
    assert {"tensorflow", "keras", "numpy"} <= pins.keys()
    conflicts = []
    for name, version in pins.items():
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in map(Requirement, requires):
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            other = pins.get(canonicalize_name(requirement.name))
            if other is not None and not requirement.specifier.contains(other, prereleases=True):
                conflicts.append(f"{name} {version} needs {requirement}, pinned {other}")
    assert conflicts == []


def test_the_distribution_name_and_every_install_hint_install_this_package():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "syncnet-expert" and project["scripts"] == {"syncnet": "syncnet.cli:main"}
    # `pip install 'syncnet[serve]'` installs an unrelated game-networking library.
    texts = [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "syncnet").rglob("*.py")),
        *sorted((REPO / "tests").glob("*.py")),
        *sorted((REPO / "bench").glob("*.py")),
    ]
    wrong = [
        f"{path.relative_to(REPO)}:{number}"
        for path in texts
        if path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"pip install [^`\n]*\bsyncnet\[", line)
    ]
    assert wrong == []


def test_the_docs_commands_name_models_that_are_there():
    """`--model paper.keras` named the shipped expert's file as if it were in the working folder; the
    shipped expert is the default, no --model needed."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert [path.name for path in docs if "--model paper.keras" in path.read_text()] == []


def test_a_missing_extra_says_what_to_install(tmp_path):
    script = "import sys; sys.modules['fastapi'] = None; from syncnet.cli import main; sys.exit(main(['serve']))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=60)
    assert run.returncode == 1
    assert run.stderr == (
        "syncnet serve: error: syncnet serve needs FastAPI and uvicorn: pip install fastapi uvicorn python-multipart "
        "(the 'serve' extra; in a checkout: pip install -e '.[serve]')\n"
    )


# --- fix --------------------------------------------------------------------------------------


def test_fix_refuses_an_offset_that_leaves_no_audio_and_warns_about_a_long_one(talking_clip, tmp_path):
    silent = syncnet("fix", talking_clip, "-o", tmp_path / "out.mp4", "--offset", 1000, cwd=tmp_path, timeout=60)
    assert silent.returncode == 1 and silent.stdout == ""
    assert silent.stderr.startswith("syncnet fix: error: an offset of 1000 frames (+40.00 s) would leave no audio: ")
    assert silent.stderr.count("\n") == 1 and not (tmp_path / "out.mp4").exists()
    assert syncnet("fix", talking_clip, "-o", tmp_path / "out.mp4", "--offset", -150, cwd=tmp_path, timeout=60).returncode == 1  # 6 s

    long = syncnet("fix", talking_clip, "-o", tmp_path / "out.mp4", "--offset", 100, cwd=tmp_path, timeout=60)
    assert long.returncode == 0 and long.stdout == f"{tmp_path / 'out.mp4'}: audio delayed by 100 frames (4.00 s)\n"
    assert long.stderr == "syncnet fix: warning: 4.00 s is a long shift; --offset counts 25 fps frames, not milliseconds\n"
    assert syncnet("fix", talking_clip, "-o", tmp_path / "near.mp4", "--offset", 3, cwd=tmp_path, timeout=60).stderr == ""


# --- train ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from test_train import write_learnable_shards

    return write_learnable_shards(tmp_path_factory.mktemp("shards"))


def tiny_run(shards, out, **overrides):
    from syncnet.train import TrainConfig

    settings = dict(preset="tiny", epochs=1, steps_per_epoch=3, batch_size=8, val_steps=2, val_speakers=["E"], vshift=4)
    return TrainConfig(str(shards), str(out), **{**settings, **overrides})


@pytest.mark.slow
def test_train_refuses_a_folder_that_holds_a_run_unless_resumed_or_overwritten_and_keras_has_nothing_to_warn(shards, tmp_path):
    import warnings

    from syncnet.errors import UserError
    from syncnet.train import train

    out = tmp_path / "mine"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_run(shards, out))
    assert [
        str(warning.message)[:60] for warning in caught if issubclass(warning.category, UserWarning)
    ] == []  # shuffle=True, ran out of data
    first = (out / "last.keras").read_bytes()
    with pytest.raises(UserError, match=r"holds a run \(last.keras, best.keras, state.json, log.csv, config.json, backup, tensorboard\)"):
        train(tiny_run(shards, out, seed=2))
    assert (out / "last.keras").read_bytes() == first
    with pytest.raises(UserError, match="choose one"):
        train(tiny_run(shards, out, resume=True, overwrite=True))
    train(tiny_run(shards, out, seed=2, overwrite=True))
    assert (out / "last.keras").read_bytes() != first
    assert len((out / "log.csv").read_text().splitlines()) == 2  # header + the new run's epoch, not the old one's


@pytest.mark.slow
def test_ctrl_c_during_training_keeps_the_last_checkpoint_and_resume_goes_on(shards, tmp_path):
    from syncnet.loading import load_model

    out = tmp_path / "run"
    args = ["train", shards, "--out", out, "--preset", "tiny", "--steps-per-epoch", "3", "--batch-size", "8"]
    args += ["--val-steps", "1", "--val-speakers", "E"]
    process = subprocess.Popen(
        [sys.executable, "-m", "syncnet", *map(str, args), "--epochs", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=environment(),
    )
    printed = ""
    for line in process.stderr:  # "epoch N/1000 ..." as each epoch ends
        printed += line
        if line.startswith("epoch 2/"):
            break
    process.send_signal(signal.SIGINT)
    out_text, err = process.communicate(timeout=120)
    err = printed + err
    assert process.returncode == 130, err[-2000:]
    assert err.endswith("syncnet: interrupted\n") and "Traceback" not in err and "terminate called" not in err, err[-2000:]
    done = json.loads((out / "state.json").read_text())["epochs_done"]
    assert done >= 2 and load_model(out / "last.keras").weights
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]  # no half-written file

    resumed = syncnet(*args, "--epochs", done + 1, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "state.json").read_text())["epochs_done"] == done + 1


def test_writes_that_belong_together_finish_before_ctrl_c_takes_effect(tmp_path):
    script = (
        "import os, signal, time\n"
        "from syncnet.files import uninterrupted\n"
        "try:\n"
        "    with uninterrupted():\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.1)\n"
        "        print('written', flush=True)\n"
        "    print('not reached')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=60)
    assert run.stdout == "written\ninterrupted\n", run.stderr


# --- preprocess -------------------------------------------------------------------------------


def test_ctrl_c_during_preprocess_keeps_the_finished_videos_and_the_rerun_does_the_rest(talking_clip, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for number in range(5):
        (videos / f"clip_{number}.mp4").write_bytes(talking_clip.read_bytes())
    out = tmp_path / "shards"
    manifest = out / "manifest.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "syncnet", "preprocess", str(videos), str(out), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # a redirected log: no progress bar in it
        text=True,
        cwd=tmp_path,
        env=environment(),
    )
    deadline = time.monotonic() + 180
    while not (manifest.is_file() and manifest.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out_text, err = process.communicate(timeout=120)

    assert process.returncode == 130 and err == "syncnet: interrupted\n", err[-2000:]  # no traceback, no progress bar
    finished = [json.loads(line) for line in manifest.read_text().splitlines()]  # whole lines only
    assert 1 <= len(finished) < 5 and all(entry["status"] == "ok" for entry in finished)
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []  # no half-written shard

    rerun = syncnet("preprocess", videos, out, "--workers", "1", cwd=tmp_path)
    assert rerun.returncode == 0 and rerun.stderr == "", rerun.stderr[-2000:]
    assert rerun.stdout.startswith(f"{5 - len(finished)} videos processed in ")
    assert len(manifest.read_text().splitlines()) == 5


# --- calibrate --------------------------------------------------------------------------------


def test_calibrate_says_when_its_sample_is_tiny():
    from types import SimpleNamespace

    from syncnet.calibrating import MIN_REAL_CLIPS, small_sample_warning

    assert small_sample_warning(SimpleNamespace(num_real=3, auc=1.0)).startswith("3 real clips is a tiny sample: ROC-AUC 1.000 ")
    assert small_sample_warning(SimpleNamespace(num_real=MIN_REAL_CLIPS, auc=0.9)) is None


def test_the_readmes_json_example_is_the_contract_with_the_shipped_experts_figures():
    text = (REPO / "README.md").read_text()
    example = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    assert list(example) == list(scored().to_dict())  # every key, in order
    # the shipped expert's scale (LSE-C about 1), not syncnet_v2's (about 7) under the shipped expert's name
    assert example["model"] == "default" and example["family"] == "paper" and example["confidence"] < 3
