"""SyncNet lip-sync expert: does the mouth in a video move with its speech?

    import syncnet
    model = syncnet.load_model()                 # the shipped expert, or a .keras path
    result = syncnet.score_video("clip.mp4")     # offset, LSE-D, LSE-C, sync probability
    loss = syncnet.SyncLoss(model)(frames, mfcc)  # frozen expert as a generator loss
"""

from .models import SyncNet, build_model
from .models.siamese import load_model, save_model
from . import audio
from .sync_loss import SyncLoss


def __getattr__(name):
    # Scoring pulls in PyAV and dlib; import it only when asked for.
    if name in ("score_video", "ScoreResult"):
        from . import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'syncnet' has no attribute {name!r}")


__all__ = ["SyncNet", "SyncLoss", "build_model", "load_model", "score_video", "ScoreResult"]
