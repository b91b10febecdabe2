"""MFCC features in TensorFlow, reproducing syncnet_python's `python_speech_features.mfcc` defaults.

syncnet_python computes `python_speech_features.mfcc(audio, 16000)` on the int16 samples of a WAV:
25 ms rectangular window, 10 ms step, 512-point FFT, 26 mel filters, pre-emphasis 0.97, lifter 22
and c0 replaced by the log frame energy. Everything here is `tf.signal`, so it runs inside `tf.data`
and `tf.function`, on CPU and GPU. TF's own mel matrix differs from python_speech_features' (which
rounds filter edges to FFT bins), so the filterbank is built the psf way, as a constant.

Layout: `mfcc()` returns (..., 13, T): 13 coefficients by T steps at 100 Hz, the "13 x 20 MFCC" of the
paper when cut into windows. Video frame v (25 fps) pairs with columns [4v, 4v + 20).
"""

import numpy as np
import tensorflow as tf

from . import hyperparameters as hp
from .errors import UserError

# syncnet_python reads WAVs as int16 and feeds those integers to the MFCC; we carry audio as float
# in [-1, 1], so scale back before the log (it shifts every log-energy by a constant).
INT16_SCALE = 32768.0

_FRAME_LENGTH = int(round(hp.MFCC_WINDOW_SECONDS * hp.AUDIO_SAMPLE_RATE))  # 400 samples
_FRAME_STEP = int(round(hp.MFCC_STEP_SECONDS * hp.AUDIO_SAMPLE_RATE))  # 160 samples
_EPS = np.float32(np.finfo(np.float64).eps)  # psf's floor for zero energy: log(2.2e-16), not float32's eps
# `mfcc_in_chunks`' chunk: 60 s of columns. Its transient tensors (frames, spectra) take about 8 KB
# a column, so a whole 10-minute track at once would take 0.5 GB; a chunk takes 50 MB.
CHUNK_STEPS = 6000


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    num_filters: int = hp.MFCC_NUM_FILTERS,
    nfft: int = hp.MFCC_NFFT,
    sample_rate: int = hp.AUDIO_SAMPLE_RATE,
    low_freq: float = hp.MFCC_LOW_FREQ,
    high_freq: float = hp.MFCC_HIGH_FREQ,
) -> np.ndarray:
    """python_speech_features' triangular filterbank, (nfft // 2 + 1, num_filters)."""
    mel_points = np.linspace(_hz_to_mel(low_freq), _hz_to_mel(high_freq), num_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mel_points) / sample_rate)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        left, centre, right = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(left), int(centre)):
            bank[j, i] = (i - left) / (centre - left)
        for i in range(int(centre), int(right)):
            bank[j, i] = (right - i) / (right - centre)
    return bank.T.astype(np.float32)


def _lifter_weights(num_cepstra: int = hp.MFCC_NUM_CEPSTRA, lifter: int = hp.MFCC_CEPSTRAL_LIFTER):
    n = np.arange(num_cepstra)
    return (1.0 + (lifter / 2.0) * np.sin(np.pi * n / lifter)).astype(np.float32)


_FILTERBANK = mel_filterbank()
_LIFTER = _lifter_weights()


def num_mfcc_steps(num_samples: int) -> int:
    """How many MFCC columns `mfcc` returns for `num_samples` audio samples (psf's framing)."""
    if num_samples <= _FRAME_LENGTH:
        return 1
    return 1 + int(np.ceil((num_samples - _FRAME_LENGTH) / _FRAME_STEP))


def mfcc(audio) -> tf.Tensor:
    """MFCC of 16 kHz audio in [-1, 1], shape (..., samples) -> (..., 13, steps), float32.

    Matches `python_speech_features.mfcc(int16_audio, 16000)` to ~1e-5 (see tests/test_audio.py).
    """
    audio = tf.convert_to_tensor(audio)
    if audio.dtype != tf.float32:
        audio = tf.cast(audio, tf.float32)
    if audio.shape.rank is not None and audio.shape.rank < 1:
        raise UserError("mfcc expects audio of shape (..., samples), got a scalar")
    signal = audio * INT16_SCALE
    # Pre-emphasis, keeping the first sample as psf does.
    signal = tf.concat([signal[..., :1], signal[..., 1:] - hp.MFCC_PREEMPHASIS * signal[..., :-1]], axis=-1)
    # psf frames as many windows as needed to cover the signal, zero-padding the last one.
    num_samples = tf.shape(signal)[-1]
    num_frames = tf.maximum(1, 1 + tf.cast(tf.math.ceil((num_samples - _FRAME_LENGTH) / _FRAME_STEP), tf.int32))
    padded_length = (num_frames - 1) * _FRAME_STEP + _FRAME_LENGTH
    paddings = tf.concat([tf.zeros([tf.rank(signal) - 1, 2], tf.int32), [[0, padded_length - num_samples]]], axis=0)
    signal = tf.pad(signal, paddings)
    frames = tf.signal.frame(signal, _FRAME_LENGTH, _FRAME_STEP)  # rectangular window
    power = tf.square(tf.abs(tf.signal.rfft(frames, fft_length=[hp.MFCC_NFFT]))) / hp.MFCC_NFFT
    energy = tf.reduce_sum(power, axis=-1)
    energy = tf.where(energy == 0.0, _EPS, energy)
    filtered = tf.tensordot(power, _FILTERBANK, axes=1)
    filtered = tf.where(filtered == 0.0, _EPS, filtered)
    cepstra = tf.signal.dct(tf.math.log(filtered), type=2, norm="ortho")[..., : hp.MFCC_NUM_CEPSTRA]
    cepstra = cepstra * _LIFTER
    cepstra = tf.concat([tf.math.log(energy)[..., None], cepstra[..., 1:]], axis=-1)
    return tf.linalg.matrix_transpose(cepstra)


def mfcc_in_chunks(audio: np.ndarray, chunk_steps: int = CHUNK_STEPS) -> np.ndarray:
    """`mfcc(audio)` of a 1-D track as numpy, computed `chunk_steps` columns at a time, so memory
    stays flat in the audio's length. Each chunk starts one step early - that column's first
    sample lacks the sample before it for the pre-emphasis - and drops it; the last chunk runs to
    the end of the audio, so it pads as `mfcc` pads. The columns equal `mfcc`'s to float rounding."""
    audio = np.asarray(audio, np.float32)
    total = num_mfcc_steps(len(audio))
    chunks = []
    for first in range(0, total, chunk_steps):
        last = min(first + chunk_steps, total)
        start = max(first - 1, 0) * _FRAME_STEP
        stop = len(audio) if last == total else (last - 1) * _FRAME_STEP + _FRAME_LENGTH
        chunks.append(mfcc(audio[start:stop]).numpy()[:, 1 if first else 0 :])
    return np.concatenate(chunks, axis=1)


def mfcc_window_start(frame_index):
    """First MFCC column paired with video frame `frame_index` (25 fps frames, 100 Hz MFCC)."""
    return frame_index * hp.MFCC_STEPS_PER_FRAME
