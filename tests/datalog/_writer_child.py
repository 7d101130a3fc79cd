"""Child process for the SIGKILL durability test: writes synthetic episodes as fast as the
writer takes them, forever, until killed. Prints READY once the writer (and its recovery) is up.

usage: python _writer_child.py DATASET_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datalog_synthetic import LAYOUT, episode_length, task_of, transition  # noqa: E402

from pearl_robot.datalog.writer import DatasetWriter, WriterConfig  # noqa: E402


def main() -> None:
    cfg = WriterConfig(robot="kill-test", commit_every=7, commit_interval_s=0.01,
                       chunk_size=2048, max_segment_bytes=6000, disk_check_interval_s=0.2)
    w = DatasetWriter(sys.argv[1], LAYOUT, cfg)
    print("READY", w.next_episode_id(), flush=True)
    episode = w.next_episode_id()
    while True:
        w.set_task(task_of(episode), model_sha="f00d")
        for step in range(episode_length(episode)):
            while w.status().queue_depth > 200:
                time.sleep(0.0005)
            if not w.write(transition(episode, step)):
                raise SystemExit(f"write refused: {w.status().message}")
        episode += 1


if __name__ == "__main__":
    main()
