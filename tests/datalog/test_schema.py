"""The transition schema: pack/unpack round trips, layout labels, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pearl_robot.datalog.schema import (
    FIELDS,
    SCHEMA_MARKER,
    DimSpec,
    SchemaError,
    TransitionLayout,
)


@settings(max_examples=40, deadline=None)
@given(obs_dim=st.integers(1, 12), action_dim=st.integers(1, 6), latent=st.integers(0, 7),
       seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(obs_dim: int, action_dim: int, latent: int, seed: int) -> None:
    layout = TransitionLayout(obs_dim, action_dim, latent)
    rng = np.random.default_rng(seed)
    obs, nxt = rng.normal(size=obs_dim), rng.normal(size=obs_dim)
    act = rng.normal(size=action_dim)
    belief = rng.normal(size=layout.belief_dim) if latent else None
    vec = layout.pack(obs, act, -1.5, nxt, False, True, episode=2**40 + 3, step=17, task=42,
                      stamps=(1.7e9, 1.7e9 + 0.01, 1.7e9 + 0.05), belief=belief)
    assert vec.shape == (layout.size,)
    t = layout.unpack(vec)
    np.testing.assert_array_equal(t.obs, obs)
    np.testing.assert_array_equal(t.next_obs, nxt)
    np.testing.assert_array_equal(t.action, act)
    assert (t.reward, t.terminated, t.truncated) == (-1.5, False, True)
    assert (t.episode, t.step, t.task) == (2**40 + 3, 17, 42)
    np.testing.assert_array_equal(t.stamps, [1.7e9, 1.7e9 + 0.01, 1.7e9 + 0.05])
    if latent:
        np.testing.assert_array_equal(t.belief, belief)
    else:
        assert t.belief.size == 0
    batch = layout.unpack_batch(np.stack([vec, vec]))
    np.testing.assert_array_equal(batch.obs[1], obs)
    assert batch.episode.tolist() == [2**40 + 3] * 2 and batch.truncated.tolist() == [True] * 2


def test_dims_label_every_field_with_offsets() -> None:
    layout = TransitionLayout(obs_dim=4, action_dim=2, latent_dim=5)
    dims = layout.dims()
    assert dims[0] == DimSpec(SCHEMA_MARKER, 0, 0)
    assert tuple(d.label for d in dims[1:]) == FIELDS
    sizes = {d.label: d.size for d in dims[1:]}
    assert sizes == {"obs": 4, "action": 2, "reward": 1, "next_obs": 4, "terminated": 1,
                     "truncated": 1, "episode": 1, "step": 1, "task": 1, "stamps": 3,
                     "belief": 11}
    offsets = [d.stride for d in dims[1:]]
    assert offsets == list(np.cumsum([0] + [d.size for d in dims[1:-1]]))
    assert sum(sizes.values()) == layout.size == 30
    assert TransitionLayout.from_dims(dims) == layout


def test_from_dims_rejects_foreign_or_inconsistent_layouts() -> None:
    dims = TransitionLayout(3, 2, 2).dims()
    with pytest.raises(SchemaError, match="expected 'pearl_transition/1'"):
        TransitionLayout.from_dims([DimSpec("x", 3, 1)] + dims[1:])
    with pytest.raises(SchemaError, match="not supported"):
        TransitionLayout.from_dims([DimSpec("pearl_transition/99", 0, 0)] + dims[1:])
    swapped = dims[:2] + [dims[3], dims[2]] + dims[4:]
    with pytest.raises(SchemaError, match="do not match"):
        TransitionLayout.from_dims(swapped)
    bad_offset = list(dims)
    bad_offset[3] = DimSpec("reward", 1, 99)
    with pytest.raises(SchemaError, match="inconsistent"):
        TransitionLayout.from_dims(bad_offset)
    with pytest.raises(SchemaError, match="empty"):
        TransitionLayout.from_dims([])


def test_pack_rejects_wrong_sizes_and_missing_belief_is_nan() -> None:
    layout = TransitionLayout(2, 2, 1)
    with pytest.raises(SchemaError, match="obs has 3 entries"):
        layout.pack(np.zeros(3), np.zeros(2), 0.0, np.zeros(2), False, False, 0, 0)
    with pytest.raises(SchemaError, match="shape"):
        layout.unpack(np.zeros(layout.size + 1))
    vec = layout.pack(np.zeros(2), np.zeros(2), 0.0, np.zeros(2), False, False, 0, 0)
    belief = layout.unpack(vec).belief
    assert np.isnan(belief[:2]).all() and belief[2] == 0.0
    with pytest.raises(SchemaError, match="latent_dim=0"):
        TransitionLayout(2, 2, 0).pack(np.zeros(2), np.zeros(2), 0.0, np.zeros(2), False,
                                       False, 0, 0, belief=np.zeros(3))
    with pytest.raises(SchemaError, match="bad layout sizes"):
        TransitionLayout(0, 2)


def test_pack_into_preallocated_buffer_and_json_round_trip() -> None:
    layout = TransitionLayout(2, 1, 0)
    out = np.full(layout.size, 7.0)
    res = layout.pack([1, 2], [3], 4.0, [5, 6], True, False, 8, 9, 10, (11, 12, 13), out=out)
    assert res is out
    assert out.tolist() == [1, 2, 3, 4, 5, 6, 1, 0, 8, 9, 10, 11, 12, 13]
    assert TransitionLayout.from_json(layout.to_json()) == layout
    with pytest.raises(SchemaError, match="version 2"):
        TransitionLayout.from_json({**layout.to_json(), "schema_version": 2})
