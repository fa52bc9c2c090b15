"""One training machinery for every model: the update, the compiled step and epoch, sharding.

The loop with checkpoints and resume is :mod:`vaejax.training.loop`, the whole-run helpers
:mod:`vaejax.training.fit`."""

from vaejax.sharding import (
    DATA_AXIS,
    batch_sharded,
    check_batch_size,
    data_mesh,
    gather_rows,
    put_replicated,
    put_row_sharded,
    replicated,
)
from vaejax.training.step import (
    NONFINITE_POLICIES,
    EpochRunner,
    NonFiniteError,
    Preprocess,
    TrainState,
    Update,
    create_train_state,
    epoch_permutation,
    gradient_update,
    make_epoch_runner,
    make_evaluator,
    make_train_step,
    mean_metrics,
    step_key,
)
