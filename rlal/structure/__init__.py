"""Everything the pruning agent acts on: prunable layers, plans, masks, cost model, importance, surgery, I/O.

    structure = find_layers(model, (3, 32, 32))              # layers from Torch-Pruning's dependency graph
    plan = Plan.from_keep_ratios(structure, 0.5, round_to=8)  # keep counts per layer
    macs, params = structure.cost.of(plan)                   # analytic, no forward pass
    with ChannelMasks(structure).applied(plan):              # score the sub-network on the dense weights
        ...
    small = cut(structure, plan)                             # a physically smaller copy
    save_pruned("out/", small, arch=ArchSpec.zoo("resnet56"), plan=plan, input_shape=(3, 32, 32))
    small = load_pruned("out/")

Words as in the project design: a *layer* is one coupled channel group named after its first conv; a *keep
ratio* is the fraction of its channels that stay; a *keep count* the number; a *plan* a keep count per layer.
"""

from rlal.structure.cost import CostModel
from rlal.structure.importance import (
    CRITERIA,
    Criterion,
    channel_importance,
    channel_order,
    check_kept,
    select_channels,
)
from rlal.structure.io import ArchSpec, load_pruned, save_pruned
from rlal.structure.layers import (
    POLICIES,
    GroupMember,
    Policy,
    PrunableLayer,
    SkippedGroup,
    Structure,
    describe_layers,
    describe_lines,
    find_layers,
)
from rlal.structure.masks import ChannelMasks
from rlal.structure.plan import Plan, check_plan
from rlal.structure.surgery import cut

__all__ = [
    "CRITERIA",
    "POLICIES",
    "ArchSpec",
    "ChannelMasks",
    "CostModel",
    "Criterion",
    "GroupMember",
    "Plan",
    "Policy",
    "PrunableLayer",
    "SkippedGroup",
    "Structure",
    "channel_importance",
    "channel_order",
    "check_kept",
    "check_plan",
    "cut",
    "describe_layers",
    "describe_lines",
    "find_layers",
    "load_pruned",
    "save_pruned",
    "select_channels",
]
