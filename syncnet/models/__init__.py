"""The experts: each family's network (siamese.py: ours and syncnet_python's; wav2lip.py;
latentsync.py), the families' facts (family.py), and the presets `build_model` makes."""

from ..errors import UserError
from . import siamese, wav2lip
from .family import FAMILIES, FAMILY_OF_PRESET, ExpertFamily
from .latentsync import LatentSyncNet
from .layers import L2Distance, SyncHead
from .losses import BalancedBinaryCrossentropy, ContrastiveLoss, MultiwayLoss
from .siamese import SyncNet, check_shape
from .wav2lip import Wav2LipSyncNet

# Every class a loaded expert can be: each has `family`, `frame_shape`, `audio_shape`, `embed_frames`,
# `embed_audio`, `sync_logits`, `distance_probability` and `calibration`, and what scoring and shards
# feed the visual tower: `frame_encoder` (None but for `lips`), `feature_shape`, `embed_features`.
EXPERT_MODELS = (SyncNet, Wav2LipSyncNet, LatentSyncNet)

# Every preset `build_model` makes - what `syncnet preprocess` and `syncnet train --preset` take - by
# its family.
PRESETS = {**{name: FAMILY_OF_PRESET[name] for name in siamese.PRESETS}, **{name: wav2lip.WAV2LIP for name in wav2lip.PRESETS}}


def build_model(preset: str = "paper"):
    """A new, untrained expert of a preset (see PRESETS): ours ('paper', 'lips', 'tiny'),
    syncnet_python's network ('syncnet_v2'), Wav2Lip's ('wav2lip'; 'wav2lip_small' and
    'wav2lip_tiny' at a quarter and a sixteenth of its width)."""
    if preset in wav2lip.PRESETS:
        return wav2lip.build(preset)
    if preset in siamese.PRESETS:
        return siamese.build_model(preset)
    raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


__all__ = [
    "EXPERT_MODELS",
    "FAMILIES",
    "ExpertFamily",
    "Wav2LipSyncNet",
    "LatentSyncNet",
    "PRESETS",
    "BalancedBinaryCrossentropy",
    "ContrastiveLoss",
    "L2Distance",
    "MultiwayLoss",
    "SyncHead",
    "SyncNet",
    "build_model",
    "check_shape",
]
