"""An expert family: everything that makes a published (or our own) lip-sync expert what it is,
apart from its weights - what its visual tower reads, its audio front-end and window rule, and how
it compares the two embeddings.

Every command and `SyncLoss` read these facts off `model.family`, never off a preset's name:

- `crop`: which crop `faces.crop_tracks` makes for it ("mouth", "face", "lips", "lower_face");
- `window_frames`, `frame_size`, `channels`: a window of frames as the model's `embed_frames` takes
  it - (window_frames, *frame_size, channels) pixel values in [0, 255], RGB (or gray), whatever the
  published network reads (the models reorder channels and rescale inside);
- `channel_order`, `value_range`: the pixels a generator trained with the expert emits - what the
  published network reads (`SyncLoss`' defaults; our own experts': RGB in [0, 1]);
- `generator_face`: the whole-face size a generator of that family emits, when the expert reads
  only its lower half (`SyncLoss` takes the half itself, as Wav2Lip's `get_sync_loss` does);
- `audio`: the audio front-end (syncnet.audio.FRONT_ENDS), its steps per second and steps per window;
  the window of frames [i, i + window_frames) starts at audio step `audio_window_start(i)`;
- `comparison`: "l2" (distance = Euclidean, P(in sync) from a fitted sigmoid head) or "cosine"
  (distance = 1 - cosine similarity of L2-normalised embeddings, P(in sync) = the similarity).
"""

from dataclasses import dataclass

import numpy as np

from .. import audio as audio_front_ends
from .. import hyperparameters as hp
from ..errors import UserError


@dataclass(frozen=True)
class ExpertFamily:
    name: str
    description: str
    crop: str
    window_frames: int
    frame_size: tuple  # (H, W) the visual tower reads
    channels: int  # 1 gray, 3 colour
    channel_order: str  # "rgb", "bgr" or "gray": what the published network reads
    value_range: tuple  # (low, high) of the published network's pixels
    audio: str  # a key of syncnet.audio.FRONT_ENDS
    comparison: str  # "l2" or "cosine"
    generator_face: tuple | None = None  # (H, W) whole face a generator emits; the lower half is read

    @property
    def frame_shape(self) -> tuple:
        """One window of frames as `embed_frames` takes it (no batch axis)."""
        return (self.window_frames, *self.frame_size, self.channels)

    @property
    def front_end(self) -> "audio_front_ends.FrontEnd":
        return audio_front_ends.FRONT_ENDS[self.audio]

    @property
    def audio_shape(self) -> tuple:
        """One audio window as `embed_audio` takes it: (features, steps)."""
        return (self.front_end.features, self.audio_window_steps)

    @property
    def audio_window_steps(self) -> int:
        return self.front_end.window_steps(self.window_frames)

    def audio_features(self, waveform, sample_rate: int = hp.AUDIO_SAMPLE_RATE):
        """16 kHz mono float waveform in [-1, 1] (NumPy or TensorFlow) -> (features, steps)."""
        return self.front_end(waveform, sample_rate)

    def audio_window_start(self, frame_index, fps: float = hp.VIDEO_FPS):
        """The audio step where the window of frames [frame_index, frame_index + window_frames)
        starts, for frames at `fps` (25 for every published expert)."""
        return self.front_end.window_start(frame_index, fps)

    def audio_windows(self, waveform, times, sample_rate: int = hp.AUDIO_SAMPLE_RATE) -> np.ndarray:
        """The family's audio window under each window of frames, placed by time: `times` are the
        seconds at which each window's first frame is shown (frame index / fps, or the frames'
        timestamps - any frame rate). The waveform: mono, 16 kHz, floats in [-1, 1] or integer PCM.
        Returns (len(times), *audio_shape) float32; a window that runs past the audio is refused."""
        features = np.asarray(self.audio_features(waveform, sample_rate))
        front_end, steps = self.front_end, self.audio_window_steps
        # a hair over the time: 0.12 s * 100 must give step 12, not 11.999...
        starts = np.floor(np.asarray(times, np.float64) * front_end.rate + 1e-6).astype(np.int64)
        if starts.ndim != 1:
            raise UserError(f"times must be a 1-D list of seconds, got shape {starts.shape}")
        if len(starts) and (starts.min() < 0 or starts.max() + steps > features.shape[-1]):
            raise UserError(
                f"audio windows must lie inside the audio ({features.shape[-1] / front_end.rate:.2f} s): "
                f"times run from {float(np.min(times)):.3f} to {float(np.max(times)):.3f} s, and a window lasts {steps / front_end.rate:.3f} s"
            )
        return np.stack([features[..., start : start + steps] for start in starts]).astype(np.float32)


class FamilyMethods:
    """What every expert model offers through its `family`: its audio front-end and windows."""

    def audio_features(self, waveform, sample_rate: int = hp.AUDIO_SAMPLE_RATE):
        """16 kHz mono waveform (floats in [-1, 1] or integer PCM) -> the family's (features, steps)."""
        return self.family.audio_features(waveform, sample_rate)

    def audio_windows(self, waveform, times, sample_rate: int = hp.AUDIO_SAMPLE_RATE) -> np.ndarray:
        """The family's audio window for each window of frames starting at `times` (seconds)."""
        return self.family.audio_windows(waveform, times, sample_rate)

    def audio_window_start(self, frame_index, fps: float = hp.VIDEO_FPS):
        """The audio step where the window of frames starting at `frame_index` starts."""
        return self.family.audio_window_start(frame_index, fps)


PAPER = ExpertFamily(
    name="paper",
    description="our own expert: 5 grayscale 112 px mouth crops, 13 x 20 MFCC, L2 distance + fitted sigmoid head",
    crop="mouth",
    window_frames=hp.WINDOW_FRAMES,
    frame_size=(hp.MOUTH_CROP_SIZE, hp.MOUTH_CROP_SIZE),
    channels=1,
    channel_order="gray",
    value_range=(0.0, 1.0),
    audio="mfcc",
    comparison="l2",
)
SYNCNET_V2 = ExpertFamily(
    name="syncnet_v2",
    description="syncnet_python's syncnet_v2: 5 RGB 224 px face crops (BGR in the published network), 13 x 20 MFCC, L2 distance",
    crop="face",
    window_frames=hp.WINDOW_FRAMES,
    frame_size=(hp.FACE_CROP_SIZE, hp.FACE_CROP_SIZE),
    channels=3,
    channel_order="bgr",
    value_range=(0.0, 255.0),
    audio="mfcc",
    comparison="l2",
)
LIPS = ExpertFamily(
    name="lips",
    description="experimental: vvadlrs3's frozen LRS3 lip encoder over 5 RGB 50 x 100 lip crops, 13 x 20 MFCC, L2 distance",
    crop="lips",
    window_frames=hp.WINDOW_FRAMES,
    frame_size=(hp.LIP_CROP_HEIGHT, hp.LIP_CROP_WIDTH),
    channels=3,
    channel_order="rgb",
    value_range=(0.0, 1.0),
    audio="mfcc",
    comparison="l2",
)
WAV2LIP = ExpertFamily(
    name="wav2lip",
    description="Wav2Lip's lipsync_expert.pth (SyncNet_color): lower halves of 5 96 px BGR faces in [0, 1], 80 x 16 mel, cosine",
    crop="lower_face",
    window_frames=hp.WINDOW_FRAMES,
    frame_size=(hp.WAV2LIP_FACE_SIZE // 2, hp.WAV2LIP_FACE_SIZE),
    channels=3,
    channel_order="bgr",
    value_range=(0.0, 1.0),
    audio="wav2lip_mel",
    comparison="cosine",
    generator_face=(hp.WAV2LIP_FACE_SIZE, hp.WAV2LIP_FACE_SIZE),
)

LATENTSYNC = ExpertFamily(
    name="latentsync",
    description="LatentSync's StableSyncNet (stable_syncnet.pt 1.5 / 1.6, latentsync_syncnet.pt 1.0): lower halves of 16 aligned 256 px RGB faces in [-1, 1], 80 x 52 mel, cosine",
    crop="latentsync_face",
    window_frames=16,  # 0.64 s at 25 fps
    frame_size=(128, 256),  # the lower half of LatentSync's 256 x 256 aligned faces
    channels=3,
    channel_order="rgb",
    value_range=(-1.0, 1.0),
    audio="latentsync_mel",
    comparison="cosine",
    generator_face=(256, 256),
)

# The families a SyncNet (models/siamese.py) can be, by preset: `tiny` is `paper` at 1/16 width.
FAMILY_OF_PRESET = {"paper": PAPER, "tiny": PAPER, "syncnet_v2": SYNCNET_V2, "lips": LIPS}
FAMILIES = {family.name: family for family in (PAPER, SYNCNET_V2, LIPS, WAV2LIP, LATENTSYNC)}
