import numpy as np
import pytest
import tensorflow as tf

from syncnet.loading import load_model
from syncnet.models import PRESETS, BalancedBinaryCrossentropy, ContrastiveLoss, L2Distance, MultiwayLoss, SyncHead, build_model


def random_windows(model, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.uniform(0, 255, (batch, *model.frame_shape)).astype(np.float32)
    mfcc = rng.normal(0, 10, (batch, *model.audio_shape)).astype(np.float32)
    return frames, mfcc


@pytest.mark.parametrize(
    "preset, frame_shape, embedding",
    [("paper", (5, 112, 112, 1), 256), ("syncnet_v2", (5, 224, 224, 3), 1024), ("tiny", (5, 112, 112, 1), 16)],
)
def test_presets_take_their_inputs_and_give_their_embeddings(preset, frame_shape, embedding):
    model = build_model(preset)
    assert model.frame_shape == frame_shape
    frames, mfcc = random_windows(model, batch=2)
    assert model.embed_frames(frames).shape == (2, embedding)
    assert model.embed_audio(mfcc).shape == (2, embedding)
    out = model({"frames": frames, "audio": mfcc})
    assert out["distance"].shape == out["probability"].shape == (2,)


def test_syncnet_v2_matches_syncnet_python_layer_for_layer():
    model = build_model("syncnet_v2")
    convs = [layer for layer in model.visual_tower.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [96, 256, 256, 256, 256, 512]
    # syncnet_python's Conv3D kernels (5, 7, 7) over RGB and (1, 5, 5): 2-D over 5 x 3 stacked channels
    assert [tuple(c.kernel.shape) for c in convs][:2] == [(7, 7, 15, 96), (5, 5, 96, 256)]
    audio_convs = [layer for layer in model.audio_tower.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert [c.filters for c in audio_convs] == [64, 192, 384, 256, 256, 512]
    bns = [layer for layer in model.layers[0].layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert bns and all(bn.epsilon == 1e-5 for bn in bns)  # PyTorch's, not Keras' 1e-3
    # SyncNetModel.py counted by hand: audio 5,669,056 + lip 7,971,200 (BatchNorm statistics included),
    # plus the 2 weights of our head.
    assert model.count_params() == 13_640_258


def test_l2_distance_is_euclidean_and_differentiable_at_zero():
    a = tf.constant([[0.0, 3.0], [1.0, 1.0]])
    b = tf.constant([[4.0, 0.0], [1.0, 1.0]])
    with tf.GradientTape() as tape:
        tape.watch(a)
        distance = L2Distance()([a, b])
    np.testing.assert_allclose(distance.numpy(), [5.0, 0.0], atol=1e-5)
    assert np.all(np.isfinite(tape.gradient(distance, a).numpy()))


def test_head_probability_falls_as_distance_grows_even_with_a_negative_raw_scale():
    head = SyncHead()
    head.build(())
    head.raw_scale.assign(-5.0)  # the softplus keeps the effective scale positive
    p = head(tf.constant([0.0, 1.0, 5.0, 20.0])).numpy()
    assert np.all(np.diff(p) < 0)


def test_contrastive_loss_pulls_positives_and_pushes_negatives_to_the_margin():
    loss = ContrastiveLoss(margin=2.0)

    def value(label, distance):
        return float(loss(np.array([label], np.float32), np.array([distance], np.float32)))

    assert value(1.0, 0.0) == 0.0
    assert value(0.0, 3.0) == 0.0  # beyond the margin: nothing to push
    assert value(1.0, 2.0) == pytest.approx(2.0)
    assert value(0.0, 1.0) == pytest.approx(0.5)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    model = build_model("tiny")
    frames, mfcc = random_windows(model)
    # Move BatchNorm statistics and the head off their initial values so the check means something.
    model.head.bias.assign(0.7)
    model({"frames": frames, "audio": mfcc}, training=True)
    before = model({"frames": frames, "audio": mfcc})
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = load_model(path)
    after = loaded({"frames": frames, "audio": mfcc})
    assert loaded.preset == "tiny" and loaded.get_config() == model.get_config()
    for key in ("distance", "probability"):
        np.testing.assert_array_equal(before[key].numpy(), after[key].numpy())


def test_a_mixed_float16_model_reloads_as_one(tmp_path):
    """get_config starts from Keras' own: the dtype policy (and name, trainable) survive the file."""
    from syncnet.models import SyncNet, siamese

    model = SyncNet(**siamese.PRESETS["tiny"], preset="tiny", name="half", dtype="mixed_float16")
    frames, mfcc = random_windows(model)
    model({"frames": frames, "audio": mfcc})
    model.save(tmp_path / "half.keras")
    loaded = load_model(tmp_path / "half.keras")
    assert loaded.dtype_policy.name == "mixed_float16" and loaded.name == "half"
    assert loaded.get_config() == model.get_config()


def test_bad_inputs_name_the_expected_shape(tmp_path):
    model = build_model("tiny")
    frames, mfcc = random_windows(model)
    with pytest.raises(ValueError, match=r"frames must have shape \(batch, 5, 112, 112, 1\)"):
        model.embed_frames(frames[:, :4])
    with pytest.raises(ValueError, match=r"audio must have shape \(batch, 13, 20\)"):
        model.embed_audio(mfcc[..., :19])
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("vgg")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "missing.keras")
    not_a_model = tmp_path / "junk.keras"
    not_a_model.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a Keras model file"):
        load_model(not_a_model)


def test_every_preset_is_listed_with_its_family():
    assert {name: family.name for name, family in PRESETS.items()} == {
        "paper": "paper",
        "lips": "lips",
        "syncnet_v2": "syncnet_v2",
        "tiny": "paper",
        "wav2lip": "wav2lip",
        "wav2lip_small": "wav2lip",
        "wav2lip_tiny": "wav2lip",
    }


def test_float16_storage_halves_the_file_and_keeps_outputs_close(tmp_path):
    from syncnet.loading import save_model

    model = build_model("paper")
    frames, mfcc = random_windows(model)
    save_model(model, tmp_path / "full.keras")
    save_model(model, tmp_path / "half.keras", float16_weights=True)
    full, half = (tmp_path / "full.keras").stat().st_size, (tmp_path / "half.keras").stat().st_size
    assert half < 0.6 * full
    loaded = load_model(tmp_path / "half.keras")
    assert loaded.weights[0].dtype == "float32"
    before = model.embed_frames(frames).numpy()
    after = loaded.embed_frames(frames).numpy()
    assert np.abs(after - before).max() <= 1e-2 * np.abs(before).max()
    assert list(tmp_path.iterdir()) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_groups_compare_every_window_with_every_audio_window_and_the_multiway_loss():
    model = build_model("tiny")
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 255, (2, 3, *model.frame_shape)).astype(np.float32)
    mfcc = rng.normal(0, 10, (2, 3, 13, 20)).astype(np.float32)
    out = model({"frames": frames, "audio": mfcc})
    assert out["distance"].shape == (2, 3, 3) and out["probability"].shape == (2, 3, 3)
    for group in range(2):  # [g, i, j] is frames i of group g paired with audio j of group g alone
        for i in range(3):
            pair = model({"frames": np.repeat(frames[group, i][None], 3, axis=0), "audio": mfcc[group]})
            np.testing.assert_allclose(out["distance"][group, i], pair["distance"], rtol=1e-5)

    labels = np.eye(4, dtype=np.float32)[[0, 0, 0]]
    distance = np.array([[1.0, 5.0, 5.0, 5.0], [5.0, 1.0, 5.0, 5.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
    loss = MultiwayLoss()(labels, distance).numpy()  # mean over the batch
    expected = np.mean([-np.log(np.exp(-d[0]) / np.exp(-d).sum()) for d in distance])
    assert loss == pytest.approx(expected, rel=1e-5)
    probability = np.array([[0.9, 0.1, 0.1, 0.1]], np.float32)
    balanced = BalancedBinaryCrossentropy()(labels[:1], probability).numpy()
    assert balanced == pytest.approx(-np.log(0.9), rel=1e-5)  # positives and negatives weigh alike


def test_a_model_too_big_for_the_free_memory_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    """LatentSync's expert takes about 3.4 GB to load: on a machine without that much free, one line
    instead of minutes of swapping. float16 storage counts double (the variables are float32)."""
    from syncnet import loading
    from syncnet.cli import main

    model = build_model("tiny")
    loading.save_model(model, tmp_path / "half.keras", float16_weights=True)
    loading.save_model(model, tmp_path / "full.keras")
    half, full = loading.loading_memory(tmp_path / "half.keras"), loading.loading_memory(tmp_path / "full.keras")
    assert min(half, full) > 2 * 4 * model.count_params()  # the float32 weights, twice (tiny: HDF5 overhead adds)
    monkeypatch.setattr(loading, "available_memory", lambda: full // 4)
    with pytest.raises(ValueError, match=r"loading it needs about .* GB of memory, this machine has .* GB free"):
        load_model(tmp_path / "full.keras")
    from synthetic import write_clip

    write_clip(tmp_path / "clip.mp4", seconds=1.0)
    assert main(["score", "--model", str(tmp_path / "half.keras"), str(tmp_path / "clip.mp4")]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "GB of memory" in error, error
