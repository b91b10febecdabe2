"""`syncnet train` on small synthetic shards: the loss falls, checkpoints and resume, divergence,
fine-tuning with frozen layers, and the tf.distribute path on two logical CPU devices.

The shards' lips and audio share one loudness envelope per clip (the crops brighten as the first
MFCC coefficient rises), so "in sync" is learnable in a few steps by the tiny preset.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from test_data import write_shard

from syncnet import data
from syncnet import hyperparameters as hp
from syncnet.cli import main
from syncnet.data import Segment
from syncnet.loading import load_model, save_model
from syncnet.models import build_model
from syncnet.train import TrainConfig, TrainingDiverged, train

pytestmark = pytest.mark.slow  # each test trains for real: 2-27 s

REPO = Path(__file__).resolve().parents[1]
SPEAKERS = ("A", "B", "C", "D", "E")
FRAMES = 60


def write_learnable_shards(folder, speakers=SPEAKERS, seed=0, corrupt=False):
    """One clip per speaker: crops whose brightness follows a random envelope, MFCC whose c0 follows
    the same envelope (4 columns per frame). corrupt=True puts NaN into the MFCC."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(folder / data.MANIFEST, "w") as manifest:
        for number, speaker in enumerate(speakers):
            envelope = np.clip(np.convolve(rng.random(FRAMES + 8), np.ones(3) / 3, "same")[4:-4], 0, 1)
            crops = (envelope[:, None, None, None] * 200 + rng.integers(0, 30, (FRAMES, 112, 112, 1))).astype(np.uint8)
            columns = np.repeat(np.concatenate([envelope, np.full(4, envelope[-1])]), 4)[: 4 * FRAMES + 16]
            mfcc = rng.normal(0, 1, (hp.MFCC_NUM_CEPSTRA, len(columns))).astype(np.float32)
            mfcc[0] += 20 * columns
            if corrupt:
                mfcc[:] = np.nan
            shard = f"shard-{number:05d}.tfrecord.gz"
            write_shard(folder / shard, [Segment(f"clip_{speaker}", speaker, 0, 0, crops, mfcc)], "tiny")
            manifest.write(
                json.dumps(
                    {
                        "video": f"clip_{speaker}.mp4",
                        "clip": f"clip_{speaker}",
                        "speaker": speaker,
                        "preset": "tiny",
                        "status": "ok",
                        "shard": shard,
                        "track_frames": FRAMES,
                    }
                )
                + "\n"
            )
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_learnable_shards(tmp_path_factory.mktemp("shards"))


def config(shards, out, **overrides):
    settings = dict(preset="tiny", epochs=2, steps_per_epoch=6, batch_size=8, learning_rate=3e-3, val_steps=2, val_speakers=["E"], vshift=4)
    return TrainConfig(str(shards), str(out), **{**settings, **overrides})


def weights(path):
    return [np.asarray(w) for w in load_model(path).weights]


@pytest.mark.parametrize("loss", ["bce", "multiway"])
def test_loss_falls_and_every_epoch_is_logged_and_checkpointed(shards, tmp_path, loss):
    out = tmp_path / "run"
    logs = train(config(shards, out, loss=loss, epochs=3, group_size=4))
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 4  # header + 3 epochs
    header = rows[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in rows[1:]]
    assert losses[-1] < losses[0], losses
    for key in ("val_probability_auc", "val_probability_accuracy", "val_offset_acc_1", "val_offset_acc_15"):
        assert key in header and np.isfinite(logs[key]), key
    assert (out / "last.keras").is_file() and (out / "best.keras").is_file()
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 3
    assert json.loads((out / "config.json").read_text())["val_shards"] == 1  # speaker E only


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(shards, tmp_path):
    train(config(shards, tmp_path / "whole", epochs=2))
    train(config(shards, tmp_path / "parts", epochs=1))  # "killed" after its first epoch
    train(config(shards, tmp_path / "parts", epochs=2, resume=True))
    for whole, resumed in zip(weights(tmp_path / "whole" / "last.keras"), weights(tmp_path / "parts" / "last.keras")):
        np.testing.assert_array_equal(whole, resumed)
    assert len((tmp_path / "parts" / "log.csv").read_text().splitlines()) == 3  # header + both epochs


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(shards, tmp_path, capsys):
    out = tmp_path / "run"
    train(config(shards, out, epochs=1))
    good = (out / "last.keras").read_bytes()
    poisoned = write_learnable_shards(tmp_path / "nan", corrupt=True)
    with pytest.raises(TrainingDiverged, match="NaN"):
        train(config(poisoned, out, epochs=2, resume=True))
    assert (out / "last.keras").read_bytes() == good

    code = main(
        [
            "train",
            str(poisoned),
            "--out",
            str(tmp_path / "cli"),
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--val-speakers",
            "E",
        ]
    )
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("syncnet train: loss became NaN/Inf")


def test_fine_tuning_with_frozen_convs_changes_only_the_fully_connected_layers(shards, tmp_path):
    from expert_checks import example_calibration

    start = build_model("tiny")
    start.calibration = example_calibration()  # fitted for these weights: the trained ones must not keep it
    save_model(start, tmp_path / "start.keras")
    train(config(shards, tmp_path / "run", epochs=1, init_from=str(tmp_path / "start.keras"), freeze="convs"))
    before, after = load_model(tmp_path / "start.keras"), load_model(tmp_path / "run" / "last.keras")
    assert before.calibration is not None and after.calibration is None
    changed = {}
    for old, new in zip(before.weights, after.weights):
        layer = old.path.split("/")[-2]
        changed.setdefault(layer, False)
        changed[layer] |= not np.array_equal(np.asarray(old), np.asarray(new))
    dense = {name: moved for name, moved in changed.items() if "_fc" in name}  # fc0, fc_bn, fc1
    convs = {name: moved for name, moved in changed.items() if name not in dense and ("_conv" in name or "_bn" in name)}
    assert convs and not any(convs.values()), convs
    assert dense and all(dense.values()), dense


def test_bad_options_are_one_line_errors(shards, tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["train", str(shards), "--out", str(tmp_path / "run"), "--preset", "tiny", "--val-speakers", "Z"]) == 1
    assert "no video of Z" in capsys.readouterr().err
    assert main(["train", str(shards), "--out", str(tmp_path / "fresh"), "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert (
        main(["train", str(shards), "--out", str(tmp_path / "run"), "--loss", "multiway", "--batch-size", "12", "--group-size", "8"]) == 1
    )
    assert "multiple of --group-size" in capsys.readouterr().err


MIRRORED = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from syncnet.train import TrainConfig, train
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
logs = train(TrainConfig(sys.argv[1], sys.argv[2], preset="tiny", epochs=1, steps_per_epoch=3, batch_size=4,
                         val_steps=1, val_speakers=["E"], vshift=4), strategy=strategy)
print("loss", logs["loss"])
"""


def test_mirrored_strategy_on_two_logical_cpus(shards, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(shards), str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert np.isfinite(float(run.stdout.split("loss")[-1]))
    assert keras.saving.load_model(tmp_path / "run" / "last.keras", compile=False).weights


def test_evaluate_reports_pair_and_offset_figures_on_the_held_out_speakers(shards, tmp_path, capsys):
    model_path = tmp_path / "tiny.keras"
    save_model(build_model("tiny"), model_path)
    assert main(["evaluate", str(shards), "--model", str(model_path), "--val-speakers", "E", "--vshift", "4"]) == 0
    figures = json.loads(capsys.readouterr().out)
    # speaker E's one 60-frame clip: 11 or 12 back-to-back windows, every one a pair
    assert 11 <= figures["pairs"] <= 12
    for key in ("pair_auc", "pair_accuracy", "offset_acc_1", "offset_acc_15"):
        assert 0.0 <= figures[key] <= 1.0, key
    assert main(["evaluate", str(tmp_path / "missing"), "--model", str(model_path)]) == 1
    assert "no such folder" in capsys.readouterr().err
