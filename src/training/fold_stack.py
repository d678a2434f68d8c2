"""Several folds of one preset as one model: their networks side by side in one vectorised call.

At batch 32 the training step of one fold leaves most of a large GPU idle (small kernels), and fold
processes sharing a GPU take turns on it rather than run together (docs/speed.md). Stacked, the
folds' variables gain a leading fold axis and every layer runs once for all of them: under JAX,
`keras.ops.vectorized_map` turns each convolution into one grouped convolution, so each kernel does
the work of all folds. Each fold keeps its own weights, batch-norm statistics, dropout seeds and
batches of its own clips; its loss is its own and the stack minimises their sum, so each fold's
gradients are those it would get alone.

Inputs and outputs carry the fold axis second: (batch, folds, ...) in, (batch, folds, classes) out.
`src.tools.bench --fold-stack K` measures whether this pays on a machine. JAX only, the GPU backend: it
relies on jax.vmap's batching of convolutions, and is tested there alone.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


class FoldStack(keras.Model):
    """The networks of `folds` (one architecture, each built with its own seed) trained together: their
    variables are copied into stacked ones, and `fold_into` copies fold k's back into a network."""

    def __init__(self, folds: list[keras.Model], **kwargs):
        super().__init__(**kwargs)
        if keras.backend.backend() != "jax":
            raise ValueError(f"FoldStack needs the JAX backend (Keras runs {keras.backend.backend()}): "
                             "vectorised stateless calls are mapped by jax.vmap only")
        shapes = {tuple(tuple(v.shape) for v in model.variables) for model in folds}
        if len(folds) < 1 or len(shapes) != 1:
            raise ValueError("FoldStack needs one or more networks of the same architecture")
        self.network, self.n_folds = folds[0], len(folds)

        def stacked(per_fold: list[list], trainable: bool) -> list:
            """One variable per variable of the network, holding every fold's values along axis 0."""
            return [self.add_weight(shape=(self.n_folds, *values[0].shape), dtype=values[0].dtype,
                                    trainable=trainable, name=f"stacked_{i}_{values[0].name}",
                                    initializer=lambda shape, dtype, values=values: np.stack(
                                        [ops.convert_to_numpy(v) for v in values]).astype(dtype))
                    for i, values in enumerate(zip(*per_fold))]
        self.stacked_trainable = stacked([m.trainable_variables for m in folds], True)
        self.stacked_state = stacked([m.non_trainable_variables for m in folds], False)

    def call(self, inputs, training=False):
        network = self.network

        def one_fold(args):
            trainable, state, x = args
            return network.stateless_call(trainable, state, x, training=training)

        outputs, state = ops.vectorized_map(
            one_fold, ([v.value for v in self.stacked_trainable], [v.value for v in self.stacked_state],
                       ops.moveaxis(inputs, 1, 0)))
        for variable, value in zip(self.stacked_state, state):  # batch-norm statistics, dropout seeds
            variable.assign(value)
        return ops.moveaxis(outputs, 0, 1)

    def compile_as(self, network: keras.Model, **kwargs) -> None:
        """Compile with a fresh copy of `network`'s optimizer (its schedule, at step 0) and its loss
        summed over the folds."""
        optimizer = network.optimizer
        self.compile(optimizer=type(optimizer).from_config(optimizer.get_config()), loss=FoldSum(network.loss),
                     **kwargs)

    def fold_into(self, k: int, model: keras.Model) -> keras.Model:
        """`model` (the fold's own network) given fold k's current variables, and returned."""
        for stacked, own in zip([*self.stacked_trainable, *self.stacked_state],
                                [*model.trainable_variables, *model.non_trainable_variables], strict=True):
            own.assign(np.asarray(ops.convert_to_numpy(stacked))[k])
        return model


class FoldSum(keras.losses.Loss):
    """A per-clip loss of one fold applied to each fold of a stack's (batch, folds, classes) outputs and
    summed over the folds: the mean over the batch is then the sum of the folds' own losses."""

    def __init__(self, loss: keras.losses.Loss, name: str = "fold_sum", **kwargs):
        super().__init__(name=name, **kwargs)
        self.loss = loss

    def call(self, y_true, y_pred):
        return sum(self.loss.call(y_true[:, k], y_pred[:, k]) for k in range(y_pred.shape[1]))


def stacked_batch(batches) -> tuple:
    """One stack batch from one batch of each fold ((inputs, targets[, ...]) tuples of equal size):
    each part stacked along a new second axis."""
    return tuple(ops.stack([ops.convert_to_tensor(b[i]) for b in batches], axis=1) for i in range(len(batches[0])))
