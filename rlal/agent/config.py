"""Typed settings of the pruning agent (:class:`AgentConfig`) and its epoch-context model
(:class:`ContextConfig`).

The context model's settings are nested in the agent's (``agent.context.z_dim``) because the agent's
networks take ``z`` as input and so need its width; the run config composes :class:`AgentConfig` as its
``agent`` section, which is the prefix the validation messages use.
"""

# Defined in rlal.config (configuration lives in one place); re-exported here for the agent package.
from rlal.config import LEARNING_KINDS, AgentConfig, AgentKind, ContextConfig

__all__ = ["LEARNING_KINDS", "AgentConfig", "AgentKind", "ContextConfig"]
