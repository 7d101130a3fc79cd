"""Recovery against arbitrary damage: truncation anywhere and flipped bytes anywhere in an
unfinished segment. Recovery never raises, and what it keeps is always an exact prefix of what
was written (chunk CRCs stop it at the damage), or the episode is quarantined."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from datalog_synthetic import LAYOUT, episode_matrix, task_of, transition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pearl_robot.datalog.dataset import DatasetPaths, read_manifest
from pearl_robot.datalog.reader import load_datasets
from pearl_robot.datalog.recovery import recover_dataset
from pearl_robot.datalog.writer import (
    DatasetWriter,
    WriterConfig,
    _Stop,  # the writer thread's stop message (a crash is simulated)
)

EP = 3  # 56 steps
N = 45

@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset whose episode 3 was left unfinished after 45 transitions (built once)."""
    root = tmp_path_factory.mktemp("fuzz_template")
    w = DatasetWriter(root, LAYOUT, WriterConfig(commit_every=4, commit_interval_s=0.01,
                                                 chunk_size=700))
    w.set_task(task_of(EP))
    for s in range(N):
        w.write(transition(EP, s))
    assert w.flush()
    w._accepting = False  # noqa: SLF001 - crash: nothing is closed
    w._put(_Stop(), force=True)  # noqa: SLF001
    w._thread.join()  # noqa: SLF001
    w._lock.release()  # noqa: SLF001
    return root


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 0.9999),
                                                         st.integers(1, 255)), max_size=3))
def test_recovery_keeps_an_exact_prefix_whatever_the_damage(template: Path, cut: float,
                                                            flips) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="datalog_fuzz_case_"))
    try:
        root = tmp / "ds"
        shutil.copytree(template, root)
        part = next((root / "episodes").glob("*.part"))
        data = bytearray(part.read_bytes())
        for where, xor in flips:
            data[int(where * len(data))] ^= xor
        part.write_bytes(bytes(data[: int(cut * len(data))]))
        report = recover_dataset(root)
        assert [e.episode for e in report.episodes] == [EP]
        entries = read_manifest(DatasetPaths(root)).entries
        assert len(entries) == 1 and entries[0]["episode"] == EP
        n = entries[0]["transitions"]
        assert 0 <= n <= N
        assert not list((root / "episodes").glob("*.part"))
        if n:
            loaded = load_datasets([root], use_cache=False, verify_sha=True)
            t = next(iter(loaded.tasks.values()))
            np.testing.assert_array_equal(t.obs, LAYOUT.unpack_batch(episode_matrix(EP, n)).obs)
            np.testing.assert_array_equal(t.step, np.arange(n))
        else:
            assert entries[0]["status"] == "quarantined"
        assert recover_dataset(root).clean
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
