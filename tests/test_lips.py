"""The `lips` preset: vvadlrs3-style lip crops, the frozen frame encoder, feature shards and the
model that reads them, end to end through training, scoring and the sync loss.

The encoder's real weights come from the vvadlrs3 wheel (`pip install --no-deps vvadlrs3==0.2.0`,
as .ci/run does); tests that need them skip with that reason when it is absent. The others build
the model with a randomly initialised encoder, which exercises the same code.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
from test_data import write_shard

from syncnet import data
from syncnet import hyperparameters as hp
from syncnet.cli import main
from syncnet.data import Segment
from syncnet.faces import FaceTrack, crop_tracks
from syncnet.loading import load_model, save_model
from syncnet.models import SyncNet, build_model
from syncnet.models.lip_encoder import VVADLRS3_INSTALL, build_lip_encoder, load_vvadlrs3_weights, vvadlrs3_weights_path
from syncnet.models.siamese import PRESETS
from syncnet.sync_loss import SyncLoss


def vvadlrs3_file() -> Path:
    try:
        return vvadlrs3_weights_path()
    except FileNotFoundError:
        pytest.skip(f"vvadlrs3 is not installed ({VVADLRS3_INSTALL})")


def random_lips_model() -> SyncNet:
    """A `lips` SyncNet with its encoder left at random weights (no wheel needed)."""
    return SyncNet(**PRESETS["lips"], preset="lips", name="syncnet_lips")


def windows(model, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.uniform(0, 255, (batch, *model.frame_shape)).astype(np.float32)
    mfcc = rng.normal(0, 10, (batch, *model.audio_shape)).astype(np.float32)
    return frames, mfcc


def test_lip_crops_are_the_lip_box_fitted_into_50_by_100_and_zero_padded():
    # A 200 x 200 frame, left half dark, right half bright; lips spanning x 60..140, y 100..120.
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[:, 100:] = 200
    landmarks = np.zeros((3, 68, 2), np.float32)
    landmarks[:, :, 0], landmarks[:, :, 1] = 100, 110
    landmarks[:, 48, :] = (60, 100)
    landmarks[:, 54, :] = (140, 120)
    landmarks[1, 57, 1] = 140  # frame 1: the mouth opens, the box is 80 x 40
    track = FaceTrack(track_id=0, start=0, landmarks=landmarks, detected=np.ones(3, bool))
    crops = [crops[0] for _, crops in crop_tracks([frame] * 3, [track], "lips")]
    assert [crop.shape for crop in crops] == [(50, 100, 3)] * 3 and crops[0].dtype == np.uint8
    # 80 x 20 -> 100 x 25 (aspect kept), the 25 rows below it zero; dark left half, bright right
    closed, opened = crops[0], crops[1]
    assert closed[25:].max() == 0 and closed[:25, 60:].min() > 150 and closed[:25, :40].max() < 50
    # 80 x 40 -> 100 x 50: no padding
    assert opened[40:, 60:].min() > 150


def test_frames_and_stored_features_give_the_same_embeddings_and_the_encoder_stays_frozen():
    model = random_lips_model()
    assert model.frame_shape == (5, 50, 100, 3) and model.feature_shape == (5, 3, 6, 512)
    assert model.frame_encoder.trainable_weights == []
    frames, mfcc = windows(model)
    # what `syncnet preprocess --preset lips` stores: uint8 codes of the encoder's features
    codes = np.clip(np.rint(model.encode_frames(frames.reshape(-1, 50, 100, 3)).numpy()), 0, 255)
    features = codes.reshape(2, *model.feature_shape)
    from_frames = model({"frames": frames, "audio": mfcc})["distance"].numpy()
    from_features = model({"features": features, "audio": mfcc})["distance"].numpy()
    np.testing.assert_allclose(from_frames, from_features, rtol=0.02)  # the codes round the features
    with pytest.raises(ValueError, match=r"features must have shape \(batch, 5, 3, 6, 512\)"):
        model.embed_features(frames)


def test_a_saved_lips_model_reloads_with_its_encoder(tmp_path):
    model = random_lips_model()
    frames, mfcc = windows(model)
    before = model({"frames": frames, "audio": mfcc})["distance"].numpy()
    save_model(model, tmp_path / "lips.keras", float16_weights=True)
    loaded = load_model(tmp_path / "lips.keras")
    assert loaded.preset == "lips" and loaded.frame_encoder.trainable_weights == []
    np.testing.assert_allclose(loaded({"frames": frames, "audio": mfcc})["distance"].numpy(), before, rtol=0.02)


def test_vvadlrs3_weights_load_into_the_encoder_by_name():
    path = vvadlrs3_file()
    encoder = build_lip_encoder()
    # MobileNet's first 11 blocks: 46 of vvadlrs3's 54 weighted layers
    assert load_vvadlrs3_weights(encoder, path) == 46
    with h5py.File(path, "r") as file:
        expected = file["model_weights/time_distributed_1/conv_pw_11/kernel:0"][()]
    np.testing.assert_array_equal(encoder.get_layer("conv_pw_11").get_weights()[0], expected)
    assert sum(int(np.prod(w.shape)) for w in encoder.weights) == 1_627_840
    features = encoder(np.full((1, 50, 100, 3), 128.0, np.float32)).numpy()
    assert features.shape == (1, 3, 6, 512) and 0 <= features.min() and features.max() <= 6 and features.max() > 0


def test_without_vvadlrs3_a_new_lips_model_or_its_shards_name_the_install_before_writing(monkeypatch, tmp_path, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vvadlrs3" else real_find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps vvadlrs3==0.2.0"):
        build_model("lips")
    write_feature_shards(tmp_path / "shards")
    (tmp_path / "videos").mkdir()
    for command in (
        ["train", str(tmp_path / "shards"), "--out", str(tmp_path / "run"), "--preset", "lips"],
        ["preprocess", str(tmp_path / "videos"), str(tmp_path / "out"), "--preset", "lips"],
    ):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.endswith(f"{VVADLRS3_INSTALL}\n")
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def write_feature_shards(folder, speakers=("A", "B", "C"), frames=60, seed=0):
    """Feature shards as `syncnet preprocess --preset lips` writes them, with random codes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(folder / data.MANIFEST, "w") as manifest:
        for number, speaker in enumerate(speakers):
            codes = rng.integers(0, 40, (frames, *data.crop_shape("lips")), dtype=np.uint8)
            mfcc = rng.normal(0, 10, (hp.MFCC_NUM_CEPSTRA, 4 * frames + 16)).astype(np.float32)
            shard = f"shard-{number:05d}.tfrecord.gz"
            write_shard(folder / shard, [Segment(f"clip_{speaker}", speaker, 0, 0, codes, mfcc)], "lips")
            manifest.write(
                json.dumps(
                    {
                        "video": f"clip_{speaker}.mp4",
                        "clip": f"clip_{speaker}",
                        "speaker": speaker,
                        "preset": "lips",
                        "status": "ok",
                        "shard": shard,
                        "track_frames": frames,
                    }
                )
                + "\n"
            )
    return data.list_shards(folder)


def test_feature_shards_feed_the_model_as_features_pairs_and_groups(tmp_path):
    shards = write_feature_shards(tmp_path)
    model = random_lips_model()
    pairs, labels = next(iter(data.make_pair_dataset(shards, "lips", batch_size=4, seed=1)))
    assert set(pairs) == {"features", "audio"} and pairs["features"].shape == (4, 5, 3, 6, 512)
    assert model(pairs)["probability"].shape == (4,)
    groups, _ = next(iter(data.make_offset_dataset(shards, "lips", batch_size=2, group_size=4, seed=1)))
    assert groups["features"].shape == (2, 4, 5, 3, 6, 512)
    assert model(groups)["distance"].shape == (2, 4, 4)
    # augmentation leaves features alone (no brightness or crop on codes) and changes the MFCC
    plain, _ = next(iter(data.make_pair_dataset(shards, "lips", batch_size=4, seed=1, augment=False)))
    np.testing.assert_array_equal(plain["features"].numpy(), pairs["features"].numpy())
    assert not np.allclose(plain["audio"].numpy(), pairs["audio"].numpy())


def test_sync_loss_takes_lower_half_faces_in_minus_one_to_one_and_reaches_their_pixels():
    loss_fn = SyncLoss(random_lips_model(), value_range=(-1, 1))
    faces = tf.Variable(np.random.default_rng(0).uniform(-1, 1, (2, 5, 48, 96, 3)).astype(np.float32))
    mfcc = np.random.default_rng(1).normal(0, 10, (2, 13, 20)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = loss_fn(faces, mfcc)
    gradient = tape.gradient(loss, faces).numpy()
    assert np.isfinite(float(loss)) and np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
