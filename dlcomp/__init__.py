"""dlcomp: the executable, doctested reference for "Deep Learning Computation".

Every public name is re-exported here from the module of the chapter section
it belongs to:

- :mod:`dlcomp.blocks`: 5.1 layers and blocks.
- :mod:`dlcomp.parameters`: 5.2 parameter management.
- :mod:`dlcomp.lazy`: 5.3 deferred initialization.
- :mod:`dlcomp.layers`: 5.4 custom layers.
- :mod:`dlcomp.serialization`: 5.5 reading and writing files, and
  :mod:`dlcomp.distributed`, its checkpoints of models trained across processes.
- :mod:`dlcomp.devices`, :mod:`dlcomp.timing` and :mod:`dlcomp.measurements`:
  5.6 GPUs (and :mod:`dlcomp.bench`, which runs the measurements for
  ``python -m dlcomp bench``, stores and plots them).

:mod:`dlcomp.auditing` turns those sections' pitfalls into a check of a
reader's own model (:func:`dlcomp.audit`).

:mod:`dlcomp.pitfalls` keeps the seed notes' mistakes, so the docs and tests
can show them failing; it is not re-exported.
"""

from dlcomp.auditing import (
    AuditCost,
    AuditError,
    AuditReport,
    Finding,
    audit,
    audit_cost,
)
from dlcomp.blocks import (
    MLP,
    FixedHiddenMLP,
    LayerShapes,
    ModuleListSequential,
    MySequential,
    NestMLP,
    ParallelBlock,
    chimera,
    stack_blocks,
    trace_shapes,
)
from dlcomp.devices import (
    DeviceInfo,
    DeviceReport,
    common_device,
    cpu,
    current_accelerator,
    describe_devices,
    gpu,
    num_gpus,
    try_all_gpus,
    try_gpu,
)
from dlcomp.distributed import (
    DistributedCheckpointManager,
    consolidate,
    destroy_process_group,
    init_process_group,
)
from dlcomp.layers import CenteredLayer, HalfFourier, MyLinear, TensorReduction
from dlcomp.lazy import (
    LazyMyLinear,
    init_lazy,
    lazy_mlp,
    materialize,
    uninitialized_parameters,
)
from dlcomp.measurements import (
    CopyRow,
    LoggingCost,
    MatmulRow,
    MeasurementSkipped,
    SyncCost,
    TwoDevices,
    copy_bandwidth,
    logging_cost,
    matmul_throughput,
    small_op_overhead,
    sync_cost,
    two_devices,
)
from dlcomp.parameters import (
    NormHistory,
    ParameterRow,
    ParameterTable,
    block1,
    block2,
    init_42,
    init_constant,
    init_normal,
    init_xavier,
    my_init,
    parameter_table,
    rgnet,
    tied_mlp,
    track_norms,
)
from dlcomp.serialization import (
    Checkpoint,
    CheckpointError,
    CheckpointInfo,
    CheckpointManager,
    MatchReport,
    TrainingRun,
    load_checkpoint,
    load_matching,
    load_safetensors,
    read_checkpoint,
    resumable_training,
    save_checkpoint,
    save_safetensors,
)
from dlcomp.timing import (
    CpuShare,
    Measurement,
    alternate,
    benchmark,
    interleaved,
    synchronize,
)

__version__ = "0.1.0"

__all__ = [
    "AuditCost",
    "AuditError",
    "AuditReport",
    "CenteredLayer",
    "Checkpoint",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "CopyRow",
    "CpuShare",
    "DeviceInfo",
    "DeviceReport",
    "DistributedCheckpointManager",
    "Finding",
    "FixedHiddenMLP",
    "HalfFourier",
    "LayerShapes",
    "LazyMyLinear",
    "LoggingCost",
    "MLP",
    "MatchReport",
    "MatmulRow",
    "Measurement",
    "MeasurementSkipped",
    "ModuleListSequential",
    "MyLinear",
    "MySequential",
    "NestMLP",
    "NormHistory",
    "ParallelBlock",
    "ParameterRow",
    "ParameterTable",
    "SyncCost",
    "TensorReduction",
    "TrainingRun",
    "TwoDevices",
    "alternate",
    "audit",
    "audit_cost",
    "benchmark",
    "block1",
    "block2",
    "chimera",
    "common_device",
    "consolidate",
    "copy_bandwidth",
    "cpu",
    "current_accelerator",
    "describe_devices",
    "destroy_process_group",
    "gpu",
    "init_42",
    "init_constant",
    "init_lazy",
    "init_normal",
    "init_process_group",
    "init_xavier",
    "interleaved",
    "lazy_mlp",
    "load_checkpoint",
    "load_matching",
    "load_safetensors",
    "logging_cost",
    "materialize",
    "matmul_throughput",
    "my_init",
    "num_gpus",
    "parameter_table",
    "read_checkpoint",
    "resumable_training",
    "rgnet",
    "save_checkpoint",
    "save_safetensors",
    "small_op_overhead",
    "stack_blocks",
    "sync_cost",
    "synchronize",
    "tied_mlp",
    "trace_shapes",
    "track_norms",
    "try_all_gpus",
    "try_gpu",
    "two_devices",
    "uninitialized_parameters",
]
