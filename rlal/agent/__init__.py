"""The pruning agent: SAC conditioned on the epoch context, its replay buffer, the epoch-context model,
the ablation baselines, and a synthetic environment with a known drifting reward."""

from rlal.agent.baselines import RandomAgent, UniformAgent
from rlal.agent.build import make_agent, make_context
from rlal.agent.config import AgentConfig, AgentKind, ContextConfig
from rlal.agent.context import EpochContext
from rlal.agent.episode import Agent, Episode, EpisodeEnv, run_episode
from rlal.agent.replay import Batch, ReplayBuffer
from rlal.agent.sac import SACAgent
from rlal.agent.synthetic import EpochResult, SyntheticEnv, SyntheticRun, run_epoch, train_synthetic

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentKind",
    "Batch",
    "ContextConfig",
    "Episode",
    "EpisodeEnv",
    "EpochContext",
    "EpochResult",
    "RandomAgent",
    "ReplayBuffer",
    "SACAgent",
    "SyntheticEnv",
    "SyntheticRun",
    "UniformAgent",
    "make_agent",
    "make_context",
    "run_episode",
    "run_epoch",
    "train_synthetic",
]
