"""The schedule's per-episode id lookup reads only what the manifest gained since last time."""

from __future__ import annotations

import json
from pathlib import Path

from pearl_robot.datalog.dataset import DatasetPaths, NextEpisodeIds, next_episode_id


def _append(manifest: Path, episode: int) -> None:
    with manifest.open("a") as fh:
        fh.write(json.dumps({"schema": "pearl_manifest/1", "episode": episode}) + "\n")


def test_incremental_lookup_agrees_with_a_full_read(tmp_path: Path) -> None:
    paths = DatasetPaths(tmp_path)
    paths.episodes.mkdir(parents=True)
    assert NextEpisodeIds()(tmp_path) == next_episode_id(tmp_path) == 0
    (paths.episodes / "ep_000003_s000.mcap.part").write_bytes(b"")  # a crash's leftover
    ids = NextEpisodeIds()
    assert ids(tmp_path) == next_episode_id(tmp_path) == 4
    for ep in range(5):
        _append(paths.manifest, ep)
        assert ids(tmp_path) == next_episode_id(tmp_path) == max(ep + 1, 4)
    # the folders are listed once: a file the running logger opens later is not looked for
    (paths.episodes / "ep_000009_s000.mcap.part").write_bytes(b"")
    assert ids(tmp_path) == 5 and next_episode_id(tmp_path) == 10
    _append(paths.manifest, 9)  # its manifest line is
    assert ids(tmp_path) == next_episode_id(tmp_path) == 10
    with paths.manifest.open("a") as fh:
        fh.write('{"schema": "pearl_manifest/1", "epis')  # a torn tail: not read yet
    assert ids(tmp_path) == 10
    with paths.manifest.open("a") as fh:
        fh.write('ode": 12}\n')  # completed: counted once whole
    assert ids(tmp_path) == next_episode_id(tmp_path) == 13
    # read incrementally: a line rewritten before the offset is not read again
    text = paths.manifest.read_text()
    paths.manifest.write_text(text.replace('"episode": 0}', '"episode": 7}'))
    _append(paths.manifest, 11)
    assert ids(tmp_path) == 13
    # a manifest rewritten shorter (recovery's compaction) is read again from the start
    paths.manifest.write_text(json.dumps({"schema": "pearl_manifest/1", "episode": 20}) + "\n")
    assert ids(tmp_path) == next_episode_id(tmp_path) == 21
