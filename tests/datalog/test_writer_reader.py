"""Writer -> MCAP -> reader round trips, rotation, numbering, recovery of damaged files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from datalog_synthetic import LAYOUT, episode_length, episode_matrix, task_of, transition
from mcap.reader import make_reader
from mcap.stream_reader import StreamReader
from mcap_ros2.decoder import DecoderFactory

from pearl_robot.datalog.cdr import (
    TransitionCodec,
    decode_float64_multiarray,
    encode_float64_multiarray,
)
from pearl_robot.datalog.dataset import (
    DatasetError,
    DatasetPaths,
    LogStorageError,
    index_manifest,
    next_episode_id,
    read_manifest,
)
from pearl_robot.datalog.reader import check_datasets, describe, load_datasets
from pearl_robot.datalog.recovery import recover_dataset
from pearl_robot.datalog.schema import TransitionLayout
from pearl_robot.datalog.writer import (
    DatasetWriter,
    WriterConfig,
    _Stop,  # the writer thread's stop message (a crash is simulated)
)

FAST = WriterConfig(robot="test", commit_every=5, commit_interval_s=0.01)


def write_episodes(root: Path, episodes: list[int], config: WriterConfig = FAST) -> None:
    with DatasetWriter(root, LAYOUT, config) as w:
        for ep in episodes:
            w.set_task(task_of(ep), model_sha="abc123")
            for s in range(episode_length(ep)):
                assert w.write(transition(ep, s))
        assert w.flush()


def test_codec_matches_reference_cdr_encoder() -> None:
    codec = TransitionCodec(LAYOUT)
    vec = transition(3, 4)
    assert codec.encode(vec) == encode_float64_multiarray(LAYOUT.dims(), vec)
    dims, data = decode_float64_multiarray(codec.encode(vec))
    assert TransitionLayout.from_dims(dims) == LAYOUT
    np.testing.assert_array_equal(data, vec)
    np.testing.assert_array_equal(codec.decode(codec.encode(vec)), vec)


def test_round_trip_per_task_arrays_and_ros2_readable(tmp_path: Path) -> None:
    write_episodes(tmp_path, list(range(7)))
    loaded = load_datasets([tmp_path])
    assert [p for p in loaded.problems if p.severity == "error"] == []
    assert len(loaded.episodes) == 7 and all(e.usable for e in loaded.episodes)
    assert {e.status for e in loaded.episodes} == {"complete"}
    assert len(loaded.tasks) == 5
    for ep in range(7):
        info = loaded.episodes[ep]
        assert info.episode == ep and info.end_reason == "truncated"
        t = loaded.tasks[info.task_key]
        assert t.task["index"] == ep % 5 and "episode" not in t.task
        rows = t.episode == info.uid
        expected = LAYOUT.unpack_batch(episode_matrix(ep))
        np.testing.assert_array_equal(t.obs[rows], expected.obs)
        np.testing.assert_array_equal(t.action[rows], expected.action)
        np.testing.assert_array_equal(t.reward[rows], expected.reward)
        np.testing.assert_array_equal(t.next_obs[rows], expected.next_obs)
        np.testing.assert_array_equal(t.step[rows], np.arange(episode_length(ep)))
        assert info.episode_return == pytest.approx(expected.reward.sum())
    # the files are plain ROS 2 MCAP: mcap-ros2-support decodes them from the embedded msgdef
    f = sorted((tmp_path / "episodes").glob("*.mcap"))[0]
    with open(f, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        topics = [(c.topic, s.name) for s, c, _, _ in reader.iter_decoded_messages()]
        fh.seek(0)
        msgs = [m for _, c, _, m in reader.iter_decoded_messages() if c.topic ==
                "/pearl/transition"]
    with open(f, "rb") as fh:  # every CRC (chunks, summary) checks out; metadata is indexed
        records = list(StreamReader(fh, validate_crcs=True).records)
        assert type(records[-1]).__name__ == "Footer"
        fh.seek(0)
        assert [m.name for m in make_reader(fh).iter_metadata()] == ["pearl_episode"]
    assert ("/pearl/task", "std_msgs/msg/String") in topics
    assert ("/pearl/transition", "std_msgs/msg/Float64MultiArray") in topics
    assert [d.label for d in msgs[0].layout.dim][1:4] == ["obs", "action", "reward"]
    np.testing.assert_array_equal(msgs[2].data, transition(0, 2))
    summary = describe(loaded)
    assert summary["episodes"] == 7 and summary["transitions"] == sum(
        episode_length(e) for e in range(7))
    # second load comes from the cache and gives the same arrays
    assert any((tmp_path / ".cache").iterdir())
    again = load_datasets([tmp_path])
    for key, t in loaded.tasks.items():
        np.testing.assert_array_equal(again.tasks[key].obs, t.obs)


def test_numbering_continues_after_restart_and_ids_are_never_reused(tmp_path: Path) -> None:
    write_episodes(tmp_path, [0, 1, 2])
    assert next_episode_id(tmp_path) == 3
    with DatasetWriter(tmp_path, LAYOUT, FAST) as w:
        assert w.next_episode_id() == 3
        assert w.episodes_on_disk() == "3 episode id(s) on disk, 0..2"
        # a policy node that restarted its own numbering at 1 must not overwrite episode 1
        for s in range(episode_length(1)):
            w.write(transition(1, s))
        explicit = w.begin_episode(task={"index": 9}, episode=None)
        w.end_episode("stopped")
        assert w.flush()
    entries = read_manifest(DatasetPaths(tmp_path)).entries
    assert [e["episode"] for e in entries] == [0, 1, 2, 3, 4]
    assert entries[3]["source_episode"] == 1 and entries[3]["transitions"] == episode_length(1)
    assert explicit == 4 and entries[4]["transitions"] == 0 and entries[4]["task"] == {"index": 9}
    loaded = load_datasets([tmp_path])
    assert [e.usable for e in loaded.episodes] == [True, True, True, True, False]
    assert not [p for p in loaded.problems if p.severity == "error"]


def test_rotation_splits_long_episodes_into_segments(tmp_path: Path) -> None:
    cfg = WriterConfig(commit_every=4, commit_interval_s=0.01, max_segment_bytes=3000)
    write_episodes(tmp_path, [1, 2], cfg)
    entries = read_manifest(DatasetPaths(tmp_path)).entries
    assert [e["episode"] for e in entries] == [1, 2]
    assert len(entries[0]["files"]) > 2 and len(entries[1]["files"]) >= 2
    assert sum(f["transitions"] for f in entries[0]["files"]) == episode_length(1)
    loaded = load_datasets([tmp_path], verify_sha=True)
    assert not loaded.problems
    t = loaded.tasks[loaded.episodes[1].task_key]
    np.testing.assert_array_equal(t.step[t.episode == 1], np.arange(episode_length(2)))
    np.testing.assert_array_equal(t.obs[t.episode == 1],
                                  LAYOUT.unpack_batch(episode_matrix(2)).obs)


def test_layout_mismatch_and_second_writer_are_refused(tmp_path: Path) -> None:
    write_episodes(tmp_path, [0])
    with pytest.raises(DatasetError, match="refusing to append"):
        DatasetWriter(tmp_path, TransitionLayout(4, 2, 2), FAST)
    with DatasetWriter(tmp_path, LAYOUT, FAST):
        with pytest.raises(LogStorageError, match="another logger"):
            DatasetWriter(tmp_path, LAYOUT, FAST)


def _open_episode_then_abandon(root: Path, ep: int, n: int) -> Path:
    """Write n transitions of an episode that never ends, then drop the writer as a crash
    would (the thread is stopped without closing the segment)."""
    w = DatasetWriter(root, LAYOUT, WriterConfig(commit_every=3, commit_interval_s=0.01,
                                                 chunk_size=512))
    w.set_task(task_of(ep))
    for s in range(n):
        w.write(transition(ep, s))
    assert w.flush()
    part = next((root / "episodes").glob(f"ep_{ep:06d}_*.part"))
    # simulate the crash: the writer thread stops where it is; the lock goes with the process
    w._accepting = False  # noqa: SLF001
    w._put(_Stop(), force=True)  # noqa: SLF001 - 'stop' when not accepting closes nothing
    w._thread.join()  # noqa: SLF001
    w._lock.release()  # noqa: SLF001
    return part


@pytest.mark.parametrize("cut", [0.0, 0.35, 0.8, 0.999, 1.0])
def test_recovery_keeps_complete_chunks_and_quarantines_the_rest(tmp_path: Path,
                                                                 cut: float) -> None:
    write_episodes(tmp_path, [0, 1, 2])
    part = _open_episode_then_abandon(tmp_path, 3, 40)
    size = part.stat().st_size
    with open(part, "r+b") as fh:
        fh.truncate(int(size * cut))
    report = recover_dataset(tmp_path)
    assert [e.episode for e in report.episodes] == [3]
    rec = report.episodes[0]
    assert not list((tmp_path / "episodes").glob("*.part"))
    assert (tmp_path / "quarantine" / part.name).exists()  # original kept untouched
    entries = read_manifest(DatasetPaths(tmp_path)).entries
    assert [e["episode"] for e in entries] == [0, 1, 2, 3]
    assert entries[3]["status"] == rec.status and entries[3]["end_reason"] == "crash"
    if cut == 1.0:
        assert rec.transitions == 40  # everything was committed before the "crash"
    if rec.transitions:
        loaded = load_datasets([tmp_path], verify_sha=True)
        info = loaded.episodes[3]
        assert info.usable and info.task["index"] == 3
        t = loaded.tasks[info.task_key]
        np.testing.assert_array_equal(t.obs[t.episode == 3],
                                      LAYOUT.unpack_batch(episode_matrix(3, rec.transitions)).obs)
    else:
        assert rec.status == "quarantined"
    # idempotent: a second pass finds nothing, and the next episode id skips 3
    assert recover_dataset(tmp_path).clean
    assert next_episode_id(tmp_path) == 4


def test_the_manifest_index_holds_what_the_entries_say(tmp_path: Path) -> None:
    """The writer and the recovery start from the index, not the entries: same ids, files,
    count, bad lines and torn tail as a full read."""
    write_episodes(tmp_path, [0, 1, 2])
    paths = DatasetPaths(tmp_path)
    with open(paths.manifest, "ab") as fh:
        fh.write(b'{"not": "an entry"}\n[1, 2]\n\n{"schema": "pearl_manifest/1", "epis')
    full, index = read_manifest(paths), index_manifest(paths)
    assert index.episodes == {e["episode"] for e in full.entries} == {0, 1, 2}
    assert index.files == {f["path"] for e in full.entries for f in e["files"]}
    assert len(index.files) >= 3 and index.entries == len(full.entries) == 3
    assert index.bad_lines == full.bad_lines and [n for n, _ in index.bad_lines] == [4, 5]
    assert index.torn_tail == full.torn_tail != b""
    assert index.valid_bytes == full.valid_bytes == paths.manifest.stat().st_size - len(
        full.torn_tail)
    assert index_manifest(DatasetPaths(tmp_path / "none")).entries == 0


def test_torn_manifest_tail_is_cut_and_episode_relisted(tmp_path: Path) -> None:
    write_episodes(tmp_path, [0, 1])
    manifest = tmp_path / "manifest.jsonl"
    raw = manifest.read_bytes()
    lines = raw.splitlines(keepends=True)
    manifest.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])  # crash mid-append
    assert any(p.severity == "error" and "torn" in p.message for p in check_datasets([tmp_path]))
    report = recover_dataset(tmp_path)
    assert report.torn_manifest_bytes > 0
    entries = read_manifest(DatasetPaths(tmp_path)).entries
    assert [(e["episode"], e["status"]) for e in entries] == [(0, "complete"), (1, "recovered")]
    assert entries[1]["transitions"] == episode_length(1)
    assert not [p for p in check_datasets([tmp_path]) if p.severity == "error"]


def test_check_finds_corrupt_and_missing_files(tmp_path: Path) -> None:
    write_episodes(tmp_path, [0, 1, 2])
    files = sorted((tmp_path / "episodes").glob("*.mcap"))
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    files[1].unlink()
    problems = check_datasets([tmp_path])
    errors = [p for p in problems if p.severity == "error"]
    assert {p.episode for p in errors} == {0, 1}
    assert any("sha256" in p.message for p in errors)
    assert any("missing" in p.message for p in errors)
    loaded = load_datasets([tmp_path], use_cache=False)
    assert [e.usable for e in loaded.episodes] == [False, False, True]
    with pytest.raises(DatasetError, match="episode 1"):
        load_datasets([tmp_path], strict=True, use_cache=False)


def test_check_warns_of_an_episode_whose_first_steps_are_missing(tmp_path: Path) -> None:
    """A logger that subscribed late logs an episode from step 4: contiguous, but headless."""
    with DatasetWriter(tmp_path, LAYOUT, FAST) as w:
        for ep, first in ((0, 0), (1, 4)):
            w.set_task(task_of(ep), model_sha="abc123")
            for s in range(first, episode_length(ep)):
                assert w.write(transition(ep, s))
        assert w.flush()
    problems = check_datasets([tmp_path])
    assert [(p.episode, p.severity) for p in problems] == [(1, "warning")]
    assert "starts at step 4" in problems[0].message


def test_several_datasets_load_together(tmp_path: Path) -> None:
    a, b = tmp_path / "night1", tmp_path / "night2"
    write_episodes(a, [0, 1])
    write_episodes(b, [0, 5])
    loaded = load_datasets([a, b])
    assert len(loaded.episodes) == 4 and len({e.uid for e in loaded.episodes}) == 4
    t0 = loaded.tasks[loaded.episodes[0].task_key]
    assert set(t0.episode.tolist()) == {0, 2, 3}  # tasks 0 (night1 ep0, night2 ep0, ep5)
    shutil.rmtree(a / ".cache")
    other = tmp_path / "other"
    with DatasetWriter(other, TransitionLayout(2, 2, 0), FAST):
        pass
    with pytest.raises(DatasetError, match="layout"):
        load_datasets([a, other])
    with pytest.raises(DatasetError, match="no such dataset"):
        load_datasets([tmp_path / "nope"])


def test_raw_cdr_input_and_foreign_layout_rejected(tmp_path: Path) -> None:
    codec = TransitionCodec(LAYOUT)
    foreign = TransitionCodec(TransitionLayout(1, 1, 0))
    with DatasetWriter(tmp_path, LAYOUT, FAST) as w:
        for s in range(episode_length(0)):
            assert w.write_cdr(codec.encode(transition(0, s)))
        w.write_cdr(foreign.encode(np.zeros(foreign.layout.size)))
        assert w.flush()
        st = w.status()
        assert st.rejected == 1 and "transition rejected" in st.message
    entries = read_manifest(DatasetPaths(tmp_path)).entries
    assert entries[0]["transitions"] == episode_length(0)
    assert json.loads(json.dumps(entries[0]))["task"] == {}
    assert os.path.exists(tmp_path / "episodes" / "ep_000000_s000.mcap")


def test_rclpy_serialized_transitions_are_logged_exactly(tmp_path: Path) -> None:
    """Fast DDS leaves garbage in CDR alignment padding; the writer must accept those bytes
    (raw subscription) and log the same vectors."""
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    def ros_bytes(vec: np.ndarray) -> bytes:
        msg = Float64MultiArray()
        msg.layout.dim = [MultiArrayDimension(label=d.label, size=d.size, stride=d.stride)
                          for d in LAYOUT.dims()]
        msg.data = vec.tolist()
        return serialize_message(msg)

    codec = TransitionCodec(LAYOUT)
    with DatasetWriter(tmp_path, LAYOUT, FAST) as w:
        for s in range(episode_length(1)):
            raw = ros_bytes(transition(1, s))
            assert codec.matches(raw)
            assert w.write_cdr(raw)
        assert w.flush()
        assert w.status().rejected == 0
    loaded = load_datasets([tmp_path], verify_sha=True)
    t = loaded.tasks[loaded.episodes[0].task_key]
    np.testing.assert_array_equal(t.obs, LAYOUT.unpack_batch(episode_matrix(1)).obs)
    np.testing.assert_array_equal(t.belief, LAYOUT.unpack_batch(episode_matrix(1)).belief)


def test_policy_node_task_messages_group_by_task_identity(tmp_path: Path) -> None:
    """/pearl/task as the policy node publishes it (index under "task", plus state, reset id
    and model) must group episodes by family/index/params only."""
    from pearl_robot.datalog.episode import task_key

    def msg(ep: int, idx: int, state: str, sha: str) -> dict:
        return {"episode": ep, "task": idx, "family": "synthetic", "params": {"g": idx},
                "state": state, "reset_id": ep * 3, "model_sha": sha}

    assert task_key(msg(1, 2, "running", "a")) == task_key(msg(7, 2, "stopped", "b"))
    assert task_key(msg(1, 2, "running", "a")) != task_key(msg(1, 3, "running", "a"))
    with DatasetWriter(tmp_path, LAYOUT, FAST) as w:
        for ep in range(4):
            idx = ep % 2
            w.set_task(msg(ep, idx, "resetting", f"sha{ep}"), model_sha=f"sha{ep}")
            w.set_task(msg(ep, idx, "running", f"sha{ep}"), model_sha=f"sha{ep}")
            for s in range(episode_length(ep)):
                w.write(transition(ep, s))
        assert w.flush()
    loaded = load_datasets([tmp_path])
    assert len(loaded.tasks) == 2
    assert sorted(t.task["index"] for t in loaded.tasks.values()) == [0, 1]
    assert [e.model_sha for e in loaded.episodes] == ["sha0", "sha1", "sha2", "sha3"]
    assert loaded.episodes[2].task["state"] == "running"


def test_transitions_outside_an_episode_are_refused_not_fatal(tmp_path: Path) -> None:
    codec = TransitionCodec(LAYOUT)
    with DatasetWriter(tmp_path, LAYOUT, FAST) as w:
        for bad in (np.nan, -1.0, 2.5, np.inf):
            vec = transition(0, 0)
            vec[LAYOUT.slices()["episode"].start] = bad
            assert not w.write(vec)
            assert not w.write_cdr(codec.encode(vec))
        for s in range(episode_length(0)):
            assert w.write(transition(0, s))
        assert w.flush()
        st = w.status()
        assert st.rejected == 8 and "not a non-negative integer" in st.message
    entries = read_manifest(DatasetPaths(tmp_path)).entries
    assert [(e["episode"], e["transitions"]) for e in entries] == [(0, episode_length(0))]
