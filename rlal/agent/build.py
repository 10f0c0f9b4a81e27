"""Factories: the agent of a configured kind, and the context model when that kind uses one."""

from __future__ import annotations

from rlal.agent.baselines import RandomAgent, UniformAgent
from rlal.agent.config import LEARNING_KINDS, AgentConfig
from rlal.agent.context import EpochContext
from rlal.agent.episode import Agent
from rlal.agent.sac import SACAgent


def make_agent(cfg: AgentConfig, state_dim: int, num_layers: int) -> Agent:
    """The agent ``cfg.kind`` names, for ``num_layers`` layers described by ``state_dim`` features each."""
    cfg.validate()
    if cfg.kind in LEARNING_KINDS:
        return SACAgent(cfg, state_dim, num_layers)
    if cfg.kind == "random":
        return RandomAgent(cfg)
    return UniformAgent(cfg)


def make_context(cfg: AgentConfig, num_layers: int) -> EpochContext | None:
    """The epoch-context model for ``kind="sac"``; None for the kinds that do not model the dynamics."""
    if not cfg.uses_context:
        return None
    return EpochContext(cfg.context, num_layers, seed=cfg.seed + 2)
