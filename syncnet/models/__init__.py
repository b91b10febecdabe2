"""Towers, the distance layer, the head and the siamese SyncNet model."""

from .layers import L2Distance, SyncHead
from .losses import BalancedBinaryCrossentropy, ContrastiveLoss, MultiwayLoss
from .siamese import PRESETS, SyncNet, build_model, check_shape

__all__ = [
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
