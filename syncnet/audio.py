"""MFCC features in TensorFlow, reproducing syncnet_python's `python_speech_features.mfcc` defaults.

syncnet_python computes `python_speech_features.mfcc(audio, 16000)` on the int16 samples of a WAV:
25 ms rectangular window, 10 ms step, 512-point FFT, 26 mel filters, pre-emphasis 0.97, lifter 22
and c0 replaced by the log frame energy. Everything here is `tf.signal`, so it runs inside `tf.data`
and `tf.function`, on CPU and GPU. TF's own mel matrix differs from python_speech_features' (which
rounds filter edges to FFT bins), so the filterbank is built the psf way, as a constant.

Layout: `mfcc()` returns (..., 13, T): 13 coefficients by T steps at 100 Hz, the "13 x 20 MFCC" of the
paper when cut into windows. Video frame v (25 fps) pairs with columns [4v, 4v + 20).

Wav2Lip's expert (and LatentSync's) reads another front-end, `mel()`: Wav2Lip's `audio.melspectrogram`
with its hparams, 80 mel bins at 80 steps a second. `FRONT_ENDS` names each front-end with its window
rule; an expert family (syncnet.models.family) says which one it reads.

Every front-end takes a 16 kHz mono waveform as floats in [-1, 1] (what `syncnet.load_media` gives),
or as integer PCM samples (int16 read as sample / 32768, int32 as sample / 2^31). Another sample rate,
or floats far outside [-1, 1] (int16-scaled floats), are refused with the reason: either would give
plausible-looking but wrong features.
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


# Floats beyond this are not audio in [-1, 1] (a clipped recording peaks at 1.0; resampling can
# overshoot a little): most likely int16 samples stored as floats.
MAX_FLOAT_AMPLITUDE = 1.5


def waveform_tensor(audio, sample_rate: int = hp.AUDIO_SAMPLE_RATE, name: str = "audio") -> tf.Tensor:
    """`audio` (..., samples) as float32 in [-1, 1], checked: 16 kHz, integer PCM scaled to [-1, 1],
    floats beyond MAX_FLOAT_AMPLITUDE refused (checked where the values are at hand: eagerly)."""
    if int(sample_rate) != hp.AUDIO_SAMPLE_RATE:
        raise UserError(
            f"{name} must be sampled at {hp.AUDIO_SAMPLE_RATE} Hz, got {sample_rate} Hz: resample it first "
            "(syncnet.load_media decodes any file to 16 kHz mono)"
        )
    audio = tf.convert_to_tensor(audio)
    if audio.shape.rank is not None and audio.shape.rank < 1:
        raise UserError(f"{name} must have shape (..., samples), got a scalar")
    if audio.dtype.is_integer:
        return tf.cast(audio, tf.float32) / float(2 ** (audio.dtype.size * 8 - 1))
    if not audio.dtype.is_floating:
        raise UserError(f"{name} must be float samples in [-1, 1] or integer PCM, got dtype {audio.dtype.name}")
    audio = tf.cast(audio, tf.float32)
    if tf.executing_eagerly() and audio.shape.num_elements():
        peak = float(tf.reduce_max(tf.abs(audio)))
        if not np.isfinite(peak):
            raise UserError(f"{name} contains NaN or Inf")
        if peak > MAX_FLOAT_AMPLITUDE:
            raise UserError(f"{name} must be floats in [-1, 1], got values up to {peak:.6g}: int16 samples as floats? divide them by 32768")
    return audio


def mfcc(audio, sample_rate: int = hp.AUDIO_SAMPLE_RATE) -> tf.Tensor:
    """MFCC of 16 kHz audio in [-1, 1] (or integer PCM), shape (..., samples) -> (..., 13, steps), float32.

    Matches `python_speech_features.mfcc(int16_audio, 16000)` to ~1e-5 (see tests/test_audio.py).
    """
    signal = waveform_tensor(audio, sample_rate) * INT16_SCALE
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


def mfcc_in_chunks(audio: np.ndarray, sample_rate: int = hp.AUDIO_SAMPLE_RATE, chunk_steps: int = CHUNK_STEPS) -> np.ndarray:
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
        chunks.append(mfcc(audio[start:stop], sample_rate).numpy()[:, 1 if first else 0 :])
    return np.concatenate(chunks, axis=1)


# --- Wav2Lip's mel spectrogram --------------------------------------------------------------------


def slaney_mel_filterbank(
    num_bins: int = hp.MEL_NUM_BINS,
    nfft: int = hp.MEL_NFFT,
    sample_rate: int = hp.AUDIO_SAMPLE_RATE,
    low_freq: float = hp.MEL_LOW_FREQ,
    high_freq: float = hp.MEL_HIGH_FREQ,
) -> np.ndarray:
    """librosa.filters.mel's default filterbank (Slaney's mel scale - linear below 1 kHz, logarithmic
    above - and area-normalised triangles), (nfft // 2 + 1, num_bins)."""

    def hz_to_mel(hz):
        hz = np.asarray(hz, np.float64)
        return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), hz / (200.0 / 3.0))

    def mel_to_hz(mel):
        return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3.0))

    fft_freqs = np.linspace(0.0, sample_rate / 2.0, nfft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(low_freq), hz_to_mel(high_freq), num_bins + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    bank = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return bank.T.astype(np.float32)


_MEL_FILTERBANK = slaney_mel_filterbank()


def mel(audio, sample_rate: int = hp.AUDIO_SAMPLE_RATE, pad_mode: str = "reflect") -> tf.Tensor:
    """Wav2Lip's `audio.melspectrogram` of 16 kHz audio in [-1, 1], (..., samples) -> (..., 80, steps).

    Pre-emphasis 0.97; centred STFT (n_fft 800, hop 200, periodic Hann window of 800), its
    magnitude; Slaney mel, 80 bins over 55-7600 Hz; 20 log10 (floored at -100 dB) - 20; scaled from
    [-100, 0] dB to [-4, 4] and clipped. `pad_mode` is how the STFT pads the ends: "reflect" as
    librosa 0.7 does (Wav2Lip pins it), "constant" (zeros) as librosa >= 0.10 does (LatentSync).
    Steps: 1 + samples // 200, at 80 a second.
    """
    signal = waveform_tensor(audio, sample_rate)
    signal = tf.concat([signal[..., :1], signal[..., 1:] - hp.MEL_PREEMPHASIS * signal[..., :-1]], axis=-1)
    half = hp.MEL_NFFT // 2
    if pad_mode == "reflect" and signal.shape[-1] is not None and signal.shape[-1] <= half:
        raise UserError(f"audio too short for the mel spectrogram: {signal.shape[-1]} samples, need more than {half}")
    paddings = tf.concat([tf.zeros([tf.rank(signal) - 1, 2], tf.int32), [[half, half]]], axis=0)
    signal = tf.pad(signal, paddings, mode={"reflect": "REFLECT", "constant": "CONSTANT"}[pad_mode])
    frames = tf.signal.frame(signal, hp.MEL_NFFT, hp.MEL_HOP) * tf.signal.hann_window(hp.MEL_NFFT, periodic=True)
    magnitude = tf.abs(tf.signal.rfft(frames, fft_length=[hp.MEL_NFFT]))
    mel_energy = tf.tensordot(magnitude, _MEL_FILTERBANK, axes=1)
    floor = 10.0 ** (hp.MEL_MIN_LEVEL_DB / 20.0)
    decibels = 20.0 * tf.math.log(tf.maximum(floor, mel_energy)) / np.log(10.0) - hp.MEL_REF_LEVEL_DB
    scale = 2.0 * hp.MEL_MAX_ABS_VALUE / -hp.MEL_MIN_LEVEL_DB
    normalised = tf.clip_by_value(
        scale * (decibels - hp.MEL_MIN_LEVEL_DB) - hp.MEL_MAX_ABS_VALUE, -hp.MEL_MAX_ABS_VALUE, hp.MEL_MAX_ABS_VALUE
    )
    return tf.linalg.matrix_transpose(normalised)


# --- Front-ends and their window rules ------------------------------------------------------------


class FrontEnd:
    """An audio front-end: `features` rows at `rate` steps a second, and the window rule of the
    experts that read it. The window under frames [i, i + n) at `fps` starts at step
    int(rate * i / fps) (Wav2Lip's `crop_audio_window`; 4 i for MFCC at 25 fps, as syncnet_python)
    and spans ceil(rate * n / 25) steps: 20 MFCC steps for 5 frames, 16 mel steps for 5, 52 for 16."""

    def __init__(self, name: str, features: int, rate: int, compute):
        self.name, self.features, self.rate, self._compute = name, features, rate, compute

    def __call__(self, waveform, sample_rate: int = hp.AUDIO_SAMPLE_RATE) -> tf.Tensor:
        return self._compute(waveform, sample_rate)

    def window_steps(self, window_frames: int) -> int:
        return -(-self.rate * window_frames // hp.VIDEO_FPS)

    def window_start(self, frame_index: int, fps: float = hp.VIDEO_FPS) -> int:
        """int(rate * frame_index / fps)."""
        return int(self.rate * frame_index / fps)


FRONT_ENDS = {
    "mfcc": FrontEnd("mfcc", hp.MFCC_NUM_CEPSTRA, hp.MFCC_RATE, lambda audio, rate: mfcc(audio, rate)),
    "wav2lip_mel": FrontEnd("wav2lip_mel", hp.MEL_NUM_BINS, hp.MEL_RATE, lambda audio, rate: mel(audio, rate, pad_mode="reflect")),
    "latentsync_mel": FrontEnd("latentsync_mel", hp.MEL_NUM_BINS, hp.MEL_RATE, lambda audio, rate: mel(audio, rate, pad_mode="constant")),
}
