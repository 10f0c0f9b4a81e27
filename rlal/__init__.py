"""rlal: train a CNN and prune it to a FLOPs budget in the same run.

Reference implementation of "Jointly Training and Pruning CNNs via Learnable Agent Guidance and
Alignment" (CVPR 2024). MACs (multiply-accumulates of one forward pass) are the cost measure throughout.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import rlal` (and `rlal --help`) does not pay for torch and Torch-Pruning.
    if name == "load_pruned":
        from rlal.structure import load_pruned

        return load_pruned
    if name == "JointPruner":
        from rlal.api import JointPruner

        return JointPruner
    raise AttributeError(f"module 'rlal' has no attribute {name!r}")
