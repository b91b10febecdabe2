import numpy as np
import pytest
import python_speech_features
import tensorflow as tf
from shared_data import shared_clip
from synthetic import speech_audio, speech_envelope

from syncnet import audio
from syncnet import hyperparameters as hp


def reference_mfcc(samples: np.ndarray) -> np.ndarray:
    """What syncnet_python computes: psf defaults on the int16 samples, as (13, steps)."""
    int16 = np.round(samples * 32768.0).clip(-32768, 32767).astype(np.int16)
    return python_speech_features.mfcc(int16, hp.AUDIO_SAMPLE_RATE).T


def assert_matches_reference(samples):
    samples = np.round(samples * 32768.0).clip(-32768, 32767) / 32768.0  # exactly int16 values
    ours = audio.mfcc(samples.astype(np.float32)).numpy()
    ref = reference_mfcc(samples)
    assert ours.shape == ref.shape == (13, audio.num_mfcc_steps(len(samples)))
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_mfcc_matches_python_speech_features_on_speech_like_audio():
    samples = speech_audio(speech_envelope(75, seed=3), seed=3)  # 3 s of voiced bursts and pauses
    assert_matches_reference(samples)


@pytest.mark.parametrize("num_samples", [100, 400, 401, 16000 + 7])
def test_mfcc_framing_matches_reference_at_edges(num_samples):
    rng = np.random.default_rng(num_samples)
    assert_matches_reference(rng.uniform(-0.5, 0.5, num_samples))


def test_mfcc_matches_reference_on_real_speech():
    from syncnet.video import load_audio

    samples = load_audio(shared_clip("*data_example.avi"))[: 5 * hp.AUDIO_SAMPLE_RATE]
    assert_matches_reference(samples)


def test_mfcc_is_batched_and_runs_in_tf_function_and_tf_data():
    rng = np.random.default_rng(0)
    batch = rng.uniform(-0.3, 0.3, (3, 8000)).astype(np.float32)
    eager = audio.mfcc(batch).numpy()
    assert eager.shape == (3, 13, audio.num_mfcc_steps(8000))
    np.testing.assert_allclose(eager[1], audio.mfcc(batch[1]).numpy(), atol=1e-5)
    graph = tf.function(audio.mfcc)(batch).numpy()
    np.testing.assert_allclose(graph, eager, atol=1e-5)
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(batch).map(audio.mfcc).batch(3))).numpy()
    np.testing.assert_allclose(mapped, eager, rtol=1e-5, atol=1e-5)  # batched kernels round differently


def test_window_alignment_four_mfcc_steps_per_video_frame():
    # One second of audio: 25 video frames, 100 MFCC steps; frame v pairs with [4v, 4v + 20).
    assert audio.FRONT_ENDS["mfcc"].window_start(0) == 0
    assert audio.FRONT_ENDS["mfcc"].window_start(10) == 40
    assert audio.num_mfcc_steps(hp.AUDIO_SAMPLE_RATE) == 99  # psf: 1 + ceil((16000 - 400) / 160)


@pytest.mark.parametrize("num_samples", [160 * 2100, 160 * 2100 + 57, 160 * 700 + 399])
def test_mfcc_in_chunks_equals_mfcc_of_the_whole_track(num_samples):
    """Chunks of 700 columns (the default is 60 s), the last one short or padded: the same columns."""
    track = speech_audio(speech_envelope(num_samples // 640 + 1))[:num_samples]
    whole = audio.mfcc(track).numpy()
    chunked = audio.mfcc_in_chunks(track, chunk_steps=700)
    assert chunked.shape == whole.shape == (13, audio.num_mfcc_steps(num_samples))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-4)
