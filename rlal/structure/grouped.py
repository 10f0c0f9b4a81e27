"""Grouped convolutions: which channels of a layer must go together.

Torch-Pruning prunes a conv with G groups (``groups`` > 1, not depthwise) by removing the same positions
from every group, so that every group keeps the same number of channels and the conv keeps its ``groups``
(``MetaPruner`` averages the importance over the groups and repeats the chosen indices in each). A layer
whose channels are a grouped conv's inputs or outputs therefore decides on sets of G channels: channel
``j`` of group 0 together with channel ``j`` of groups 1 .. G-1. :func:`tie_grouped` finds these sets (the
union over every grouped conv of the layer) and renumbers the layer's channels as sets, so that masks, the
cost model, channel importance and the cut keep working per layer channel, now a set. Removing whole
groups (which would shrink ``groups``) is not supported.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import nn

MemberKind = Literal["conv", "depthwise", "linear", "batchnorm", "instancenorm", "prelu"]
Role = Literal["out", "in"]

Raw = tuple[nn.Module, str, MemberKind, Role, tuple[int, ...], tuple[int, ...]]
"""A group member before masking is decided: module, name, kind, role, local and root positions."""


def tie_grouped(raw: list[Raw], channels: int) -> tuple[list[Raw], int, int] | str:
    """Tie the channels that grouped convs force to go together (Torch-Pruning's rule: the same position in
    every group), renumbering the layer's channels as sets of tied channels. Returns the members with their
    roots renumbered (and a grouped conv's input positions as weight positions, see GroupMember), the number
    of sets and the channels per set; or the reason the group cannot be tied evenly."""
    grouped = [r for r in raw if r[2] == "conv" and r[0].groups > 1]
    if not grouped:
        return raw, channels, 1
    parent = list(range(channels))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for module, name, _, role, local, root in grouped:
        groups = module.groups
        size = (module.in_channels if role == "in" else module.out_channels) // groups
        by_position: dict[int, list[int]] = {}
        for p, r in zip(local, root, strict=True):
            by_position.setdefault(p % size, []).append(r)
        if any(len(roots) != groups for roots in by_position.values()):
            return f"grouped conv {name} (groups={groups}) mixes these channels with other layers' in a group"
        for roots in by_position.values():
            for r in roots[1:]:
                parent[find(r)] = find(roots[0])
    sets: dict[int, list[int]] = {}
    for r in range(channels):
        sets.setdefault(find(r), []).append(r)
    sizes = {len(members) for members in sets.values()}
    if len(sizes) != 1:
        return "grouped convs with different groups tie these channels unevenly"
    unit = [0] * channels
    for u, members in enumerate(sorted(sets.values())):
        for r in members:
            unit[r] = u
    n_sets = len(sets)
    tied: list[Raw] = []
    for module, name, kind, role, local, root in raw:
        if kind == "conv" and role == "in" and module.groups > 1:
            size = module.in_channels // module.groups
            positions = sorted({(p % size, unit[r]) for p, r in zip(local, root, strict=True)})
            new_local, new_root = tuple(p for p, _ in positions), tuple(u for _, u in positions)
        else:
            new_local, new_root = local, tuple(unit[r] for r in root)
        counts = np.bincount(np.array(new_root, dtype=np.int64), minlength=n_sets)
        if (counts != counts[0]).any():
            return f"grouped convs tie the channels of {name} unevenly"
        tied.append((module, name, kind, role, new_local, new_root))
    return tied, n_sets, sizes.pop()
