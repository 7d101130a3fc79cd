"""Configs: validation names the field; YAML and presets load."""

import pytest

from pearl_robot.core.config import (
    REFERENCE_PRESETS,
    ExperimentConfig,
    PearlConfig,
    TrainConfig,
    load_experiment,
    merge,
    reference_config,
    to_dict,
)
from pearl_robot.errors import ConfigError


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match="PearlConfig.discount"):
        PearlConfig(discount=1.5)
    with pytest.raises(ConfigError, match="TrainConfig.num_steps_per_eval"):
        TrainConfig(num_steps_per_eval=5, max_path_length=20)
    with pytest.raises(ConfigError, match="hidden_sizes"):
        PearlConfig(hidden_sizes=())
    with pytest.raises(ConfigError, match="PearlConfig.context_sampling"):
        PearlConfig(context_sampling="sequence")
    with pytest.raises(ConfigError, match="PearlConfig.belief_head.*'information'"):
        PearlConfig(belief_head="attention")
    with pytest.raises(ConfigError, match="PearlConfig.belief_rank"):
        PearlConfig(belief_head="information", belief_rank=0)


def test_unknown_and_mistyped_yaml_fields_fail_at_load(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("pearl:\n  latent_dimm: 4\n")
    with pytest.raises(ConfigError, match="latent_dimm"):
        load_experiment(f)
    f.write_text("pearl:\n  latent_dim: four\n")
    with pytest.raises(ConfigError, match="pearl.latent_dim must be an integer"):
        load_experiment(f)
    f.write_text("pearl: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(f)
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "missing.yaml")


def test_yaml_preset_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: point-robot\npearl:\n  hidden_sizes: [64, 64]\n"
                 "train:\n  num_iterations: 7\n")
    cfg = load_experiment(f)
    assert cfg.pearl.hidden_sizes == (64, 64)
    assert cfg.pearl.reward_scale == 100.0  # from the preset
    assert cfg.train.num_iterations == 7 and cfg.train.max_path_length == 20


@pytest.mark.parametrize("family", sorted(REFERENCE_PRESETS))
def test_every_reference_preset_is_valid(family):
    cfg = reference_config(family)
    assert cfg.train.task_family == family
    assert merge(cfg, {}) == cfg


def test_to_dict_round_trip():
    cfg = reference_config("sparse-point-robot")
    again = merge(ExperimentConfig(), {"pearl": to_dict(cfg.pearl), "train": to_dict(cfg.train)})
    assert again == cfg


def test_exponent_without_dot_is_a_number(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("pearl:\n  policy_lr: 1e-3\n")  # YAML 1.1 reads this as a string
    assert load_experiment(f).pearl.policy_lr == 1e-3
    f.write_text("pearl:\n  policy_lr: fast\n")
    with pytest.raises(ConfigError, match="policy_lr must be a number"):
        load_experiment(f)
