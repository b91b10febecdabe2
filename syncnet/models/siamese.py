"""The siamese SyncNet: visual tower + audio tower -> L2 distance -> sigmoid head."""

import keras
from keras import ops

from .. import hyperparameters as hp
from ..calibration import Calibration
from ..errors import UserError
from .family import LIPS, PAPER, SYNCNET_V2, FamilyMethods
from .layers import L2Distance, SyncHead
from .lip_encoder import build_lip_encoder, load_vvadlrs3_weights
from .towers import LIP_FEATURE_SCALE, build_audio_tower, build_visual_tower

PRESETS = {
    # The paper's input (5 grayscale 112 px mouth crops, 13 x 20 MFCC), sized to train on a CPU.
    "paper": dict(visual_input="mouth", width=0.5, audio_width=0.25, embedding_dim=256, bn_epsilon=1e-3),
    # syncnet_python's public model, layer for layer (PyTorch BatchNorm epsilon), for its weights.
    "syncnet_v2": dict(visual_input="face", width=1.0, audio_width=1.0, embedding_dim=1024, bn_epsilon=1e-5),
    # vvadlrs3's LRS3 lip encoder (frozen) on 50 x 100 RGB lip crops, a small tower over its features.
    "lips": dict(visual_input="lips", width=0.5, audio_width=0.25, embedding_dim=256, bn_epsilon=1e-3),
    # A few thousand weights, for unit tests and smoke runs.
    "tiny": dict(visual_input="mouth", width=0.0625, audio_width=0.0625, embedding_dim=16, bn_epsilon=1e-3),
}


@keras.saving.register_keras_serializable(package="syncnet")
class SyncNet(FamilyMethods, keras.Model):
    """Takes `{"frames": (batch, 5, H, W, C), "audio": (batch, 13, 20) MFCC}`, returns
    `{"distance": (batch,), "probability": (batch,)}` - the embedding distance and P(in sync).

    Frames are pixel values in [0, 255]: (5, 112, 112, 1) grayscale mouths for `visual_input="mouth"`,
    (5, 224, 224, 3) RGB faces for `"face"`, (5, 50, 100, 3) RGB lips for `"lips"`. See `frame_shape`.

    A `"lips"` model first runs each frame through a frozen `frame_encoder` (vvadlrs3's MobileNet,
    syncnet.models.lip_encoder); its visual tower reads the encoder's features. Those features are
    what its training shards hold, so training and evaluation pass `{"features": (batch, 5, 3, 6,
    512), "audio": ...}` instead of frames (`feature_shape`). For the other inputs the encoder is the
    identity: features are the frames.
    """

    def __init__(
        self,
        visual_input: str = "mouth",
        width: float = 0.5,
        audio_width: float | None = None,
        embedding_dim: int = 256,
        bn_epsilon: float = 1e-3,
        preset: str | None = None,
        calibration=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.visual_input = visual_input
        self.width = width
        self.audio_width = width if audio_width is None else audio_width
        self.embedding_dim = embedding_dim
        self.bn_epsilon = bn_epsilon
        self.preset = preset
        self.frame_encoder = build_frame_encoder() if visual_input == "lips" else None
        self.visual_tower = build_visual_tower(visual_input, width, embedding_dim, bn_epsilon)
        self.audio_tower = build_audio_tower(self.audio_width, embedding_dim, bn_epsilon)
        self.l2_distance = L2Distance(name="l2_distance")
        self.head = SyncHead(name="head")
        self.head.build(())
        # The in-sync / tampered verdict fitted for this model (syncnet.calibration.Calibration), or
        # None; saved inside the .keras file (get_config), so a calibrated model keeps its verdict.
        self.calibration = calibration
        self.built = True  # every sub-layer has its weights now; nothing depends on the call

    @property
    def frame_shape(self) -> tuple:
        """Shape of one window of frames (pixels), without the batch axis."""
        if self.frame_encoder is None:
            return self.feature_shape
        return (hp.WINDOW_FRAMES, *self.frame_encoder.input_shape[1:])

    @property
    def feature_shape(self) -> tuple:
        """Shape of one window of what the visual tower reads: the frame encoder's features, or
        the frames themselves."""
        return tuple(self.visual_tower.input_shape[1:])

    @property
    def family(self):
        """The expert family (syncnet.models.family) this model belongs to, by what its visual tower reads."""
        return {"mouth": PAPER, "face": SYNCNET_V2, "lips": LIPS}[self.visual_input]

    @property
    def audio_shape(self) -> tuple:
        """One audio window: (13, 20) MFCC."""
        return (hp.MFCC_NUM_CEPSTRA, hp.WINDOW_MFCC_STEPS)

    def distance_probability(self, distance):
        """P(in sync) of a distance: the fitted head."""
        return self.head(distance)

    def sync_logits(self, visual, audio):
        """log-odds of P(in sync) of embedding pairs, computed in float32 whatever the compute dtype."""
        distance = self.l2_distance([ops.cast(visual, "float32"), ops.cast(audio, "float32")])
        return self.head.logits(distance)

    def encode_frames(self, frames):
        """(n, H, W, C) single frames -> (n, *feature_shape[1:]): the frozen frame encoder's
        features (always in inference mode), or the frames unchanged when there is no encoder."""
        if self.frame_encoder is None:
            return frames
        return self.frame_encoder(frames, training=False)

    def embed_frames(self, frames, training=False):
        """(batch, 5, H, W, C) pixel windows -> (batch, embedding_dim)."""
        check_shape("frames", frames, (None, *self.frame_shape))
        if self.frame_encoder is not None:
            features = self.encode_frames(ops.reshape(frames, (-1, *self.frame_shape[1:])))
            frames = ops.reshape(features, (-1, *self.feature_shape))
        return self.visual_tower(frames, training=training)

    def embed_features(self, features, training=False):
        """(batch, *feature_shape) windows of frame-encoder features -> (batch, embedding_dim)."""
        check_shape("features", features, (None, *self.feature_shape))
        return self.visual_tower(features, training=training)

    def embed_audio(self, mfcc, training=False):
        """(batch, 13, 20) MFCC windows -> (batch, embedding_dim)."""
        check_shape("audio", mfcc, (None, *self.audio_shape))
        return self.audio_tower(mfcc, training=training)

    def call(self, inputs, training=None):
        """`frames` (batch, 5, H, W, C) with `audio` (batch, 13, 20) MFCC pairs each window with one audio
        window: distance (batch,). Groups - frames (batch, k, 5, H, W, C) with audio (batch, k, 13, 20) -
        compare every window of a group with every audio window of it (the multi-way loss), each
        window and each audio window embedded once: distance (batch, k, k), [g, i, j] = frames i
        against audio j of group g. `features` in place of `frames`: windows of frame-encoder
        features (what shards hold)."""
        mfcc = inputs["audio"]
        if "features" in inputs:
            visual_inputs, shape, embed = inputs["features"], self.feature_shape, self.embed_features
        else:
            visual_inputs, shape, embed = inputs["frames"], self.frame_shape, self.embed_frames
        if len(mfcc.shape) == 4:
            group = mfcc.shape[1]
            visual = embed(ops.reshape(visual_inputs, (-1, *shape)), training=training)
            audio = self.embed_audio(ops.reshape(mfcc, (-1, *self.audio_shape)), training=training)
            visual = ops.reshape(visual, (-1, group, 1, self.embedding_dim))
            audio = ops.reshape(audio, (-1, 1, group, self.embedding_dim))
        else:
            visual = embed(visual_inputs, training=training)
            audio = self.embed_audio(mfcc, training=training)
        distance = self.l2_distance([visual, audio])
        return {"distance": distance, "probability": self.head(distance)}

    def get_config(self):
        return {
            **super().get_config(),  # name, trainable, dtype policy (mixed_float16 survives a reload)
            "visual_input": self.visual_input,
            "width": self.width,
            "audio_width": self.audio_width,
            "embedding_dim": self.embedding_dim,
            "bn_epsilon": self.bn_epsilon,
            "preset": self.preset,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    @classmethod
    def from_config(cls, config):
        calibration = config.pop("calibration", None)
        return cls(**config, calibration=None if calibration is None else Calibration.from_dict(calibration))


def check_shape(name: str, tensor, expected: tuple, wanted: str | None = None):
    """Compare a tensor's static shape with `expected` (None = any) and say what was wanted.

    `wanted` describes the shape in the message; by default `expected` with None read as "batch".
    """
    shape = tuple(getattr(tensor, "shape", ()))
    if wanted is None:
        wanted = "(" + ", ".join("batch" if d is None else str(d) for d in expected) + ")"
    if len(shape) != len(expected) or any(
        want is not None and have is not None and int(have) != want for have, want in zip(shape, expected)
    ):
        raise UserError(f"{name} must have shape {wanted}, got {tuple(shape)}")


def build_frame_encoder() -> keras.Sequential:
    """The `lips` preset's frozen frame encoder: (n, 50, 100, 3) RGB lip crops 0..255 -> (n, 3, 6,
    512) MobileNet features as codes 0..255 (the uint8 scale shards store them at)."""
    encoder = keras.Sequential([build_lip_encoder(), keras.layers.Rescaling(LIP_FEATURE_SCALE)], name="frame_encoder")
    encoder.trainable = False
    return encoder


def build_model(preset: str = "paper") -> SyncNet:
    """A new SyncNet of a preset ('paper', 'lips', 'syncnet_v2' or 'tiny'), untrained but for the
    `lips` preset's frame encoder, which gets vvadlrs3's weights (the package must be installed)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    model = SyncNet(**PRESETS[preset], preset=preset, name=f"syncnet_{preset}")
    if model.frame_encoder is not None:
        load_vvadlrs3_weights(model.frame_encoder.layers[0])
    return model
