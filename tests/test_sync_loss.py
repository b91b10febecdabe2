import keras
import numpy as np
import pytest
import tensorflow as tf

from syncnet.errors import UserError
from syncnet.models import build_model
from syncnet.sync_loss import SyncLoss


@pytest.fixture(scope="module")
def expert():
    model = build_model("tiny")
    rng = np.random.default_rng(0)
    # Non-trivial BatchNorm statistics: a training-mode forward pass moves them.
    model(
        {
            "frames": rng.uniform(0, 255, (8, *model.frame_shape)).astype(np.float32),
            "audio": rng.normal(0, 10, (8, 13, 20)).astype(np.float32),
        },
        training=True,
    )
    return model


def toy_generator(size=48):
    """Maps an MFCC window to 5 RGB mouth frames in [-1, 1] - a stand-in for Wav2Lip's generator."""
    return keras.Sequential(
        [
            keras.Input((13, 20)),
            keras.layers.Flatten(),
            keras.layers.Dense(5 * 6 * 6 * 3),
            keras.layers.Reshape((5 * 6, 6, 3)),
            keras.layers.UpSampling2D(size // 6),
            keras.layers.Reshape((5, size, size, 3)),
            keras.layers.Activation("tanh"),
        ]
    )


def mfcc_batch(batch=4, seed=1):
    return np.random.default_rng(seed).normal(0, 10, (batch, 13, 20)).astype(np.float32)


def test_gradients_reach_the_frames_and_a_generator_step_leaves_the_expert_bit_identical(expert):
    loss_fn = SyncLoss(expert, value_range=(-1, 1))
    generator = toy_generator()
    optimizer = keras.optimizers.Adam(1e-2)
    before = [w.numpy().copy() for w in expert.weights]
    mfcc = mfcc_batch()
    losses = []
    for _ in range(3):
        with tf.GradientTape() as tape:
            frames = generator(mfcc)
            tape.watch(frames)
            loss = loss_fn(frames, mfcc)
        frame_grad, *grads = tape.gradient(loss, [frames, *generator.trainable_variables])
        optimizer.apply(grads, generator.trainable_variables)
        losses.append(float(loss))
    assert float(tf.reduce_max(tf.abs(frame_grad))) > 0
    assert expert.trainable_weights == []
    for old, new in zip(before, expert.weights):
        np.testing.assert_array_equal(old, new.numpy())
    assert losses[-1] < losses[0]  # the generator learns to please the (frozen) expert


def test_the_loss_is_bce_against_in_sync(expert):
    loss_fn = SyncLoss(expert, value_range=(0, 1))
    frames = np.random.default_rng(2).uniform(0, 1, (4, 5, 112, 112, 1)).astype(np.float32)
    mfcc = mfcc_batch()
    p = expert({"frames": frames * 255.0, "audio": mfcc}, training=False)["probability"].numpy()
    np.testing.assert_allclose(float(loss_fn(frames, mfcc)), np.mean(-np.log(p)), rtol=1e-5)


def test_rgb_and_any_size_are_converted_in_graph(expert):
    loss_fn = SyncLoss(expert, value_range=(0, 1))
    rgb = np.random.default_rng(3).uniform(0, 1, (2, 5, 96, 96, 3)).astype(np.float32)
    gray = (rgb * [0.299, 0.587, 0.114]).sum(-1, keepdims=True)
    resized = tf.image.resize(gray.reshape(10, 96, 96, 1), (112, 112), method="bilinear")
    direct = expert({"frames": tf.reshape(resized, (2, 5, 112, 112, 1)) * 255.0, "audio": mfcc_batch(2)})["probability"]
    np.testing.assert_allclose(loss_fn.probability(rgb, mfcc_batch(2)), direct, rtol=1e-5)


def test_works_in_tf_function_and_with_xla(expert):
    loss_fn = SyncLoss(expert, value_range=(-1, 1))
    frames = tf.random.uniform((2, 5, 64, 64, 3), -1, 1, seed=4)
    mfcc = mfcc_batch(2)
    eager = float(loss_fn(frames, mfcc))

    def loss_and_grad(frames):
        with tf.GradientTape() as tape:
            tape.watch(frames)
            loss = loss_fn(frames, mfcc)
        return loss, tape.gradient(loss, frames)

    for compiled in (tf.function(loss_and_grad), tf.function(loss_and_grad, jit_compile=True)):
        loss, grad = compiled(frames)
        assert float(loss) == pytest.approx(eager, rel=1e-4)
        assert float(tf.reduce_max(tf.abs(grad))) > 0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_inputs(expert, dtype):
    loss_fn = SyncLoss(expert, value_range=(-1, 1))
    frames32 = tf.random.uniform((2, 5, 64, 64, 3), -1, 1, seed=5)
    low = tf.cast(frames32, dtype)
    low_mfcc = tf.cast(mfcc_batch(2), dtype)
    with tf.GradientTape() as tape:
        tape.watch(low)
        loss = loss_fn(low, low_mfcc)
    assert loss.dtype == tf.float32 and np.isfinite(float(loss))
    grad = tape.gradient(loss, low)
    assert grad.dtype == low.dtype and float(tf.reduce_max(tf.abs(tf.cast(grad, tf.float32)))) > 0
    reference = float(loss_fn(tf.cast(low, tf.float32), tf.cast(low_mfcc, tf.float32)))
    assert float(loss) == pytest.approx(reference, rel=1e-5)


def test_under_a_mixed_float16_global_policy(expert):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        generator = toy_generator()
        loss_fn = SyncLoss(expert, value_range=(-1, 1))
        with tf.GradientTape() as tape:
            loss = loss_fn(generator(mfcc_batch()), mfcc_batch())
        grads = tape.gradient(loss, generator.trainable_variables)
        assert np.isfinite(float(loss)) and all(g is not None for g in grads)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_clear_errors_for_bad_inputs(expert):
    loss_fn = SyncLoss(expert)
    mfcc = mfcc_batch(2)
    with pytest.raises(UserError, match=r"frames must have shape \(batch, 5, H, W, C\)"):
        loss_fn(np.zeros((2, 64, 64, 3), np.float32), mfcc)  # no 5-frame axis
    with pytest.raises(UserError, match=r"frames must have shape \(batch, 5, H, W, C\)"):
        loss_fn(np.zeros((2, 4, 64, 64, 3), np.float32), mfcc)
    with pytest.raises(UserError, match="1 \\(gray\\) or 3 \\(colour\\) channels"):
        loss_fn(np.zeros((2, 5, 64, 64, 2), np.float32), mfcc)
    with pytest.raises(UserError, match=r"audio must have shape \(batch, 13, 20\)"):
        loss_fn(np.zeros((2, 5, 64, 64, 3), np.float32), mfcc[:, :, :10])
    with pytest.raises(UserError, match="float or integer"):
        loss_fn(np.zeros((2, 5, 64, 64, 3), bool), mfcc)
    with pytest.raises(UserError, match="value_range"):
        SyncLoss(expert, value_range=(1, 0))
    with pytest.raises(UserError, match="cannot be what the paper expert reads"):
        loss_fn(np.zeros((2, 5, 48, 96, 3), np.float32), mfcc)  # a squashed lower half: aspect 2 against 1


# --- Issue 22's findings: each failed before --------------------------------------------------


def bad_batches():
    """(name, frames, audio, expected message) for a loss over (0, 1) frames."""
    good = np.random.default_rng(6).uniform(0, 1, (2, 5, 64, 64, 3)).astype(np.float32)
    nan = good.copy()
    nan[0, 0, 0, 0, 0] = np.nan
    bad_audio = mfcc_batch(2)
    bad_audio[1, 0, 0] = np.inf
    return [
        ("nan_frames", nan, mfcc_batch(2), "frames contain NaN or Inf"),
        ("inf_audio", good, bad_audio, "audio contains NaN or Inf"),
        ("uint8_scale", good * 255.0, mfcc_batch(2), "outside value_range"),
    ]


@pytest.mark.parametrize("case", bad_batches(), ids=lambda case: case[0])
def test_bad_values_raise_eagerly_and_in_tf_function_and_poison_xla(expert, case):
    _, frames, audio, message = case
    loss_fn = SyncLoss(expert, value_range=(0, 1))
    with pytest.raises(UserError, match=message):
        loss_fn(frames, audio)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        tf.function(loss_fn)(tf.constant(frames), tf.constant(audio))
    # XLA drops assertions: the loss is NaN instead of a plausible number
    assert np.isnan(float(tf.function(loss_fn, jit_compile=True)(tf.constant(frames), tf.constant(audio))))
    good = np.clip(np.nan_to_num(frames / max(1.0, float(np.nanmax(frames)))), 0, 1)
    assert np.isfinite(float(tf.function(loss_fn, jit_compile=True)(tf.constant(good), tf.constant(mfcc_batch(2)))))


def test_batch_sizes_that_differ_are_refused_in_every_mode(expert):
    loss_fn = SyncLoss(expert)
    frames = np.random.default_rng(7).uniform(0, 1, (4, 5, 64, 64, 3)).astype(np.float32)
    with pytest.raises(UserError, match="different batch sizes: 4 and 1"):
        loss_fn(frames, mfcc_batch(1))
    with pytest.raises(Exception, match="different batch sizes: 4 and 1"):  # at tracing: autograph wraps the UserError
        tf.function(loss_fn, jit_compile=True)(tf.constant(frames), tf.constant(mfcc_batch(1)))
    dynamic = tf.function(loss_fn, input_signature=[tf.TensorSpec((None, 5, 64, 64, 3)), tf.TensorSpec((None, 13, 20))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="different batch sizes"):
        dynamic(tf.constant(frames), tf.constant(mfcc_batch(1)))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_policy_set_before_the_expert_is_loaded(expert, policy, tmp_path):
    """GPU users set the global policy at start-up, before load_model: the expert still computes in
    float32 (it crashed: 'expected a float tensor but is a half tensor')."""
    from syncnet.loading import load_model, save_model

    save_model(expert, tmp_path / "expert.keras")
    keras.mixed_precision.set_global_policy(policy)
    try:
        expert = load_model(tmp_path / "expert.keras")
        generator = toy_generator()
        loss_fn = SyncLoss(expert, value_range=(-1, 1))
        mfcc = mfcc_batch()
        for step in (loss_fn, tf.function(loss_fn), tf.function(loss_fn, jit_compile=True)):
            with tf.GradientTape() as tape:
                loss = step(generator(mfcc), mfcc)
            grads = tape.gradient(loss, generator.trainable_variables)
            assert loss.dtype == tf.float32 and np.isfinite(float(loss)) and all(g is not None for g in grads)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_report_puts_the_real_frames_beside_the_generated(expert):
    loss_fn = SyncLoss(expert, value_range=(0, 1))
    rng = np.random.default_rng(8)
    real = rng.uniform(0, 1, (3, 5, 64, 64, 1)).astype(np.float32)
    blank = np.full_like(real, 0.5)
    report = loss_fn.report(blank, real, mfcc_batch(3))
    assert set(report) == {"sync_loss", "sync_loss_real", "p_in_sync", "p_in_sync_real"}
    np.testing.assert_allclose(float(report["sync_loss"]), float(loss_fn(blank, mfcc_batch(3))), rtol=1e-5)
    np.testing.assert_allclose(float(report["p_in_sync_real"]), float(tf.reduce_mean(loss_fn.probability(real, mfcc_batch(3)))), rtol=1e-6)


def test_every_family_has_a_crop_contract():
    from syncnet.models import FAMILIES
    from syncnet.sync_loss import _CROP_CONTRACTS

    assert {family.crop for family in FAMILIES.values()} <= set(_CROP_CONTRACTS)
