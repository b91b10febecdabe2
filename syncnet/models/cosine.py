"""What the published experts that compare by cosine share - Wav2Lip's (wav2lip.py) and LatentSync's
(latentsync.py): frames scaled from [0, 255] into the family's value range and stacked frame-major
into channels (3 t + c), two encoders, L2-normalised embeddings, P(in sync) = their cosine
similarity (non-negative: both come out of a ReLU), distance = 1 - cosine, and the calibration kept
in the `.keras` file. A family module gives its encoders (`encode_visual`, `encode_audio`) and
`embedding_dim`."""

import keras
from keras import ops

from ..calibration import Calibration
from .family import FamilyMethods
from .siamese import check_shape

NORMALIZE_EPSILON = 1e-12  # F.normalize's floor on the norm
# P(in sync) is the cosine similarity itself; its log-odds are taken with it clipped this far from 0
# and 1 (PyTorch's BCELoss clamps the log at -100 instead: the loss differs only past p < 1e-7).
PROBABILITY_EPSILON = 1e-7


def l2_normalize(x):
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), NORMALIZE_EPSILON)


class CosineExpert(FamilyMethods, keras.Model):
    """`{"frames": (batch, T, H, W, 3) RGB in [0, 255], "audio": (batch, *audio_shape)}` -> `{"distance":
    1 - cosine, "probability": cosine}`; groups - frames (batch, k, T, ...) with audio (batch, k, ...)
    - compare every window of a group with every audio window of it, (batch, k, k) (the multi-way loss)."""

    family = None  # each family module's class sets its ExpertFamily

    def __init__(self, calibration=None, **kwargs):
        super().__init__(**kwargs)
        self.calibration = calibration

    frame_shape = property(lambda self: self.family.frame_shape)
    audio_shape = property(lambda self: self.family.audio_shape)
    # No frozen per-frame encoder (as the `lips` preset has): what the visual tower reads is the frames.
    frame_encoder = None
    feature_shape = frame_shape

    def encode_visual(self, stacked, training, batch_statistics):
        """(batch, H, W, 3 T) frames in the family's range -> (batch, embedding_dim)."""
        raise NotImplementedError

    def encode_audio(self, audio, training, batch_statistics):
        """(batch, features, steps, 1) -> (batch, embedding_dim)."""
        raise NotImplementedError

    def embed_frames(self, frames, training=False, batch_statistics=False):
        """(batch, T, H, W, 3) RGB pixels in [0, 255] -> (batch, embedding_dim) unit vectors.
        `batch_statistics`: BatchNorm on the batch's own statistics (PyTorch's train mode), where the
        network has BatchNorm."""
        check_shape("frames", frames, (None, *self.frame_shape))
        low, high = self.family.value_range
        frames = ops.cast(frames, self.compute_dtype) * ((high - low) / 255.0) + low
        height, width = self.family.frame_size
        # (b, t, h, w, c) -> (b, h, w, t, c) -> channels 3 t + c: the published networks' frame stacking
        stacked = ops.reshape(ops.transpose(frames, (0, 2, 3, 1, 4)), (-1, height, width, 3 * self.family.window_frames))
        return l2_normalize(self.encode_visual(stacked, training, batch_statistics))

    def embed_features(self, features, training=False):
        """What scoring and shards call the visual tower with: here, windows of frames."""
        return self.embed_frames(features, training)

    def embed_audio(self, audio, training=False, batch_statistics=False):
        """(batch, *audio_shape) windows of the family's features -> (batch, embedding_dim) unit vectors."""
        check_shape("audio", audio, (None, *self.audio_shape))
        return l2_normalize(self.encode_audio(ops.expand_dims(ops.cast(audio, self.compute_dtype), -1), training, batch_statistics))

    def similarity(self, visual, audio):
        """Cosine similarity of unit embeddings, float32: the family's P(in sync)."""
        return ops.sum(ops.cast(visual, "float32") * ops.cast(audio, "float32"), axis=-1)

    def distance_probability(self, distance):
        """P(in sync) of a distance (1 - cosine): the cosine similarity."""
        return 1.0 - distance

    def sync_logits(self, visual, audio):
        """log-odds of P(in sync) = the cosine similarity, float32."""
        p = ops.clip(self.similarity(visual, audio), PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
        return ops.log(p) - ops.log1p(-p)

    def call(self, inputs, training=None):
        frames, audio = inputs["frames"], inputs["audio"]
        if len(audio.shape) == len(self.audio_shape) + 2:  # groups
            group = audio.shape[1]
            visual = self.embed_frames(ops.reshape(frames, (-1, *self.frame_shape)), training)
            heard = self.embed_audio(ops.reshape(audio, (-1, *self.audio_shape)), training)
            visual = ops.reshape(visual, (-1, group, 1, self.embedding_dim))
            heard = ops.reshape(heard, (-1, 1, group, self.embedding_dim))
        else:
            visual, heard = self.embed_frames(frames, training), self.embed_audio(audio, training)
        similarity = self.similarity(visual, heard)
        return {"distance": 1.0 - similarity, "probability": similarity}

    def get_config(self):
        calibration = None if self.calibration is None else self.calibration.to_dict()
        return {**super().get_config(), "calibration": calibration}

    @classmethod
    def from_config(cls, config):
        calibration = config.pop("calibration", None)
        return cls(**config, calibration=None if calibration is None else Calibration.from_dict(calibration))
