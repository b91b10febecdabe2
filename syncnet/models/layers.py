"""The two small layers that join the towers: an L2 distance and a sigmoid head on it."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="syncnet")
class L2Distance(keras.layers.Layer):
    """Euclidean distance between two batches of embeddings: (batch, d), (batch, d) -> (batch,);
    the leading axes broadcast, so (b, k, 1, d) against (b, 1, k, d) gives all pairs (b, k, k).

    `epsilon` keeps the square root differentiable when the embeddings coincide.
    """

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        a, b = inputs
        squared = ops.sum(ops.square(a - b), axis=-1)
        return ops.sqrt(ops.maximum(squared, self.epsilon))

    def compute_output_shape(self, input_shape):
        a, b = (tuple(shape) for shape in input_shape)
        a, b = (1,) * (len(b) - len(a)) + a, (1,) * (len(a) - len(b)) + b
        return tuple(y if x == 1 else x for x, y in zip(a, b))[:-1]

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="syncnet")
class SyncHead(keras.layers.Layer):
    """P(in sync) = sigmoid(bias - scale * distance), the scale kept positive (softplus).

    A positive scale makes the probability fall as the distance grows, so the head can never
    invert the meaning of the distance the towers learn.
    """

    def __init__(self, initial_scale: float = 1.0, initial_bias: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_scale = initial_scale
        self.initial_bias = initial_bias

    def build(self, input_shape):
        # softplus^-1(initial_scale), so the scale starts at exactly `initial_scale`.
        raw = float(ops.convert_to_numpy(ops.log(ops.expm1(self.initial_scale))))
        self.raw_scale = self.add_weight(name="raw_scale", shape=(), initializer=keras.initializers.Constant(raw))
        self.bias = self.add_weight(name="bias", shape=(), initializer=keras.initializers.Constant(self.initial_bias))

    @property
    def scale(self):
        return ops.softplus(self.raw_scale)

    def set_sync_head(self, scale: float, bias: float):
        """Set P(in sync) = sigmoid(bias - scale * distance), e.g. as `syncnet calibrate` fitted it."""
        self.raw_scale.assign(float(np.log(np.expm1(scale))))
        self.bias.assign(float(bias))

    def logits(self, distance):
        return self.bias - self.scale * distance

    def call(self, distance):
        return ops.sigmoid(self.logits(distance))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "initial_scale": self.initial_scale,
            "initial_bias": self.initial_bias,
        }
