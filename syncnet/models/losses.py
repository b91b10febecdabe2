"""Training losses: BCE on the head's probability (the default) and the paper's contrastive loss."""

import keras
from keras import ops

from .. import hyperparameters as hp


@keras.saving.register_keras_serializable(package="syncnet")
class ContrastiveLoss(keras.losses.Loss):
    """Chung & Zisserman's loss on the embedding distance d for labels y (1 = in sync):

        y * d^2 + (1 - y) * max(margin - d, 0)^2, halved and averaged over the batch.
    """

    def __init__(self, margin: float = hp.CONTRASTIVE_MARGIN, name="contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, distance):
        distance = ops.convert_to_tensor(distance)
        y = ops.cast(ops.reshape(y_true, ops.shape(distance)), distance.dtype)
        positive = y * ops.square(distance)
        negative = (1.0 - y) * ops.square(ops.relu(self.margin - distance))
        return 0.5 * (positive + negative)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
