"""dlcomp: the executable, doctested reference for "Deep Learning Computation".

Every public name is re-exported here from the module of the chapter section
it belongs to:

- :mod:`dlcomp.blocks`: 5.1 layers and blocks.
- :mod:`dlcomp.parameters`: 5.2 parameter management.
- :mod:`dlcomp.lazy`: 5.3 deferred initialization.
- :mod:`dlcomp.layers`: 5.4 custom layers.

:mod:`dlcomp.pitfalls` keeps the seed notes' mistakes, so the docs and tests
can show them failing; it is not re-exported.
"""

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
from dlcomp.layers import CenteredLayer, HalfFourier, MyLinear, TensorReduction
from dlcomp.lazy import (
    LazyMyLinear,
    init_lazy,
    lazy_mlp,
    materialize,
    uninitialized_parameters,
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

__version__ = "0.1.0"

__all__ = [
    "CenteredLayer",
    "FixedHiddenMLP",
    "HalfFourier",
    "LayerShapes",
    "LazyMyLinear",
    "MLP",
    "ModuleListSequential",
    "MyLinear",
    "MySequential",
    "NestMLP",
    "NormHistory",
    "ParallelBlock",
    "ParameterRow",
    "ParameterTable",
    "TensorReduction",
    "block1",
    "block2",
    "chimera",
    "init_42",
    "init_constant",
    "init_lazy",
    "init_normal",
    "init_xavier",
    "lazy_mlp",
    "materialize",
    "my_init",
    "parameter_table",
    "rgnet",
    "stack_blocks",
    "tied_mlp",
    "trace_shapes",
    "track_norms",
    "uninitialized_parameters",
]
