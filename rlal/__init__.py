"""rlal: train a CNN and prune it to a FLOPs budget in the same run.

Reference implementation of "Jointly Training and Pruning CNNs via Learnable Agent Guidance and
Alignment" (CVPR 2024). MACs (multiply-accumulates of one forward pass) are the cost measure throughout.
"""

import os
import sys

__version__ = "0.1.0"


def drop_working_dir_from_sys_path() -> None:
    """Remove the current directory from the front of ``sys.path``, where ``python -m rlal`` puts it (the
    ``rlal`` console script does not). Otherwise a module lying where rlal is run, say a ``mynets.py``
    shipped inside a downloaded pruned model, would be importable by name: rlal never imports code from
    the working directory implicitly. A no-op under ``python -P`` / ``PYTHONSAFEPATH``."""
    if sys.flags.safe_path or not sys.path:
        return
    if os.path.realpath(sys.path[0] or os.curdir) == os.path.realpath(os.curdir):
        del sys.path[0]


def __getattr__(name: str):
    # Lazy, so that `import rlal` (and `rlal --help`) does not pay for torch and Torch-Pruning.
    if name == "load_pruned":
        from rlal.structure import load_pruned

        return load_pruned
    if name == "JointPruner":
        from rlal.api import JointPruner

        return JointPruner
    raise AttributeError(f"module 'rlal' has no attribute {name!r}")
