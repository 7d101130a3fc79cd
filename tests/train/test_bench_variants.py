"""bench_inference's variants resolve to the configs the docs name: the information head's
preset, ablation overrides on top of a variant, and families without a variant refuse it."""

import pytest

from bench.bench_inference import split_variant, variant_config


def test_information_variant_is_the_pooled_recipe_with_the_information_head():
    info = variant_config("twin-arm", "information", seed=3)
    pooled = variant_config("twin-arm", "pooled", seed=3)
    assert (info.pearl.inference, info.pearl.belief_head, info.pearl.belief_rank) == \
        ("pooled", "information", 1)
    assert pooled.pearl.belief_head == "mlp"
    # one change: everything else of the pooled recipe is the same
    differ = {f for f in info.pearl.__dataclass_fields__
              if getattr(info.pearl, f) != getattr(pooled.pearl, f)}
    assert differ == {"belief_head"}
    assert info.train.seed == 3


def test_ablation_overrides_apply_on_top_of_the_variant():
    name, over = split_variant("information@pearl.belief_rank=2,pearl.kl_lambda=0.5")
    assert name == "information" and over == {"pearl": {"belief_rank": 2, "kl_lambda": 0.5}}
    cfg = variant_config("twin-arm", "information@pearl.belief_rank=2", seed=0)
    assert cfg.pearl.belief_rank == 2 and cfg.pearl.belief_head == "information"


def test_a_family_without_the_variant_refuses_it():
    with pytest.raises(SystemExit, match="no information config"):
        variant_config("point-robot", "information", seed=0)
    with pytest.raises(SystemExit, match="unknown variant"):
        split_variant("attention")
