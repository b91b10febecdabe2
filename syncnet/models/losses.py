"""Training losses: BCE on the head's probability (the default), the paper's contrastive loss, and the
multi-way loss over several audio windows per video window ("Perfect Match", Chung et al. 2019)."""

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


@keras.saving.register_keras_serializable(package="syncnet")
class MultiwayLoss(keras.losses.Loss):
    """Which of several audio windows goes with the lips: softmax cross-entropy over the negated
    distances (batch, candidates) against one-hot labels. The towers set their own temperature
    (the embeddings are not normalised), so there is no scale to tune.
    """

    def __init__(self, name="multiway", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, distance):
        distance = ops.convert_to_tensor(distance)
        return keras.losses.categorical_crossentropy(ops.cast(y_true, distance.dtype), -distance, from_logits=True)


@keras.saving.register_keras_serializable(package="syncnet")
class BalancedBinaryCrossentropy(keras.losses.Loss):
    """BCE with the positives and the negatives of each row weighted alike, (batch, candidates) ->
    (batch,): the head learns P(in sync) for even odds, not the 1-in-`candidates` of the multi-way batches.
    """

    def __init__(self, name="balanced_bce", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, probability):
        probability = ops.convert_to_tensor(probability)
        y = ops.cast(y_true, probability.dtype)
        p = ops.clip(probability, 1e-7, 1.0 - 1e-7)
        positive = -ops.sum(y * ops.log(p), axis=-1) / ops.maximum(ops.sum(y, axis=-1), 1.0)
        negative = -ops.sum((1.0 - y) * ops.log(1.0 - p), axis=-1) / ops.maximum(ops.sum(1.0 - y, axis=-1), 1.0)
        return 0.5 * (positive + negative)
