"""Towers, the distance layer, the head and the siamese SyncNet model."""

from .family import FAMILIES, ExpertFamily
from .latentsync import LatentSyncNet
from .layers import L2Distance, SyncHead
from .losses import BalancedBinaryCrossentropy, ContrastiveLoss, MultiwayLoss
from .siamese import PRESETS, SyncNet, build_model, check_shape
from .wav2lip import Wav2LipSyncNet

# Every class a loaded expert can be: each has `family`, `frame_shape`, `audio_shape`,
# `embed_frames`, `embed_audio`, `sync_logits` and `calibration`.
EXPERT_MODELS = (SyncNet, Wav2LipSyncNet, LatentSyncNet)

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
