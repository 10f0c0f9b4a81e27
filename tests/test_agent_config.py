"""Agent and context settings: valid defaults, errors that name the key, and the factories."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import rlal.config as config_module
from rlal.agent import (
    AgentConfig,
    ContextConfig,
    EpochContext,
    RandomAgent,
    SACAgent,
    UniformAgent,
    make_agent,
    make_context,
)
from rlal.errors import RlalError


def test_defaults_are_valid():
    cfg = AgentConfig().validate()
    assert (cfg.kind, cfg.gamma, cfg.credit, cfg.context.rnn) == ("sac", 0.0, "every-step", "gru")


def test_every_field_has_a_docstring_or_shares_its_neighbours():
    text = inspect.getsource(config_module)
    undocumented = []
    for cls in (AgentConfig, ContextConfig):
        body = text[text.index(f"class {cls.__name__}") :]
        for f in dataclasses.fields(cls):
            line_after = body[body.index(f"\n    {f.name}: ") + 1 :].splitlines()[1].strip()
            if not line_after.startswith('"""') and f.name != "context":
                undocumented.append(f"{cls.__name__}.{f.name}")
    assert not undocumented


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"kind": "ppo"}, "agent.kind"),
        ({"hidden_sizes": []}, "agent.hidden_sizes"),
        ({"actor_lr": 0.0}, "agent.actor_lr"),
        ({"critic_lr": -1.0}, "agent.critic_lr"),
        ({"alpha_lr": 0.0}, "agent.alpha_lr"),
        ({"tau": 0.0}, "agent.tau"),
        ({"tau": 1.5}, "agent.tau"),
        ({"gamma": 1.01}, "agent.gamma"),
        ({"batch_size": 0}, "agent.batch_size"),
        ({"replay_capacity": 10, "batch_size": 64}, "agent.replay_capacity"),
        ({"updates_per_epoch": -1}, "agent.updates_per_epoch"),
        ({"warmup_episodes": -1}, "agent.warmup_episodes"),
        ({"init_alpha": 0.0}, "agent.init_alpha"),
        ({"baseline_rate": 0.0}, "agent.baseline_rate"),
        ({"uniform_keep": 1.5}, "agent.uniform_keep"),
        ({"context": ContextConfig(z_dim=0)}, "agent.context.z_dim"),
        ({"context": ContextConfig(embed_dim=0)}, "agent.context.embed_dim"),
        ({"context": ContextConfig(rnn="rnn")}, "agent.context.rnn"),  # type: ignore[arg-type]
        ({"context": ContextConfig(decoder_hidden=[0])}, "agent.context.decoder_hidden"),
        ({"context": ContextConfig(lr=0.0)}, "agent.context.lr"),
        ({"context": ContextConfig(updates_per_epoch=-1)}, "agent.context.updates_per_epoch"),
        ({"context": ContextConfig(max_epochs=0)}, "agent.context.max_epochs"),
    ],
)
def test_validation_names_the_bad_key(change, key):
    with pytest.raises(RlalError, match=key.replace(".", r"\.")):
        AgentConfig(**change).validate()


def test_validation_prefix_follows_the_section_name():
    with pytest.raises(RlalError, match=r"^search\.agent\.tau"):
        AgentConfig(tau=0.0).validate(prefix="search.agent")


def test_make_agent_validates_and_builds_each_kind():
    with pytest.raises(RlalError, match=r"agent\.tau"):
        make_agent(AgentConfig(tau=0.0), state_dim=4, num_layers=3)
    assert isinstance(make_agent(AgentConfig(kind="sac"), 4, 3), SACAgent)
    assert isinstance(make_agent(AgentConfig(kind="sac-no-dynamics"), 4, 3), SACAgent)
    assert isinstance(make_agent(AgentConfig(kind="random"), 4, 3), RandomAgent)
    assert isinstance(make_agent(AgentConfig(kind="uniform"), 4, 3), UniformAgent)
    assert make_agent(AgentConfig(kind="sac"), 4, 3).uses_context
    assert not make_agent(AgentConfig(kind="sac-no-dynamics"), 4, 3).uses_context


def test_only_the_full_method_gets_a_context_model():
    assert isinstance(make_context(AgentConfig(kind="sac"), num_layers=3), EpochContext)
    for kind in ("sac-no-dynamics", "random", "uniform"):
        assert make_context(AgentConfig(kind=kind), num_layers=3) is None
