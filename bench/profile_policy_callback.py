"""Where the policy node's ``/joint_states`` callback spends its time (issue 14's split).

Creates a real ``PolicyNode`` in this process (the graph's parameters, a twin-arm bundle) and
calls its ``/joint_states`` callback directly at 20 Hz, so the executor and the DDS hop are left
out and only the callback remains: reading the state, the controller's tick, building and
publishing the command. Every other call runs under cProfile; the others are timed plainly.
No logger subscribes, so no episode starts and the actor is not called (the controller sends
its safe command): this measures the ROS side of the tick, not the model.

    python -m bench.profile_policy_callback                 # 300 calls, about 20 s
    python -m bench.profile_policy_callback --bundle DIR --calls 600
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--bundle", type=Path, default=REPO / "models" / "arm3")
    p.add_argument("--calls", type=int, default=300, help="callbacks measured (after 20)")
    p.add_argument("--top", type=int, default=25, help="profile rows printed")
    args = p.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(101, 200))
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.parameter import Parameter

    from pearl_robot.ros.conversions import joint_state_msg
    from pearl_robot.ros.graph import build_graph
    from pearl_robot.ros.policy_node import PolicyNode

    tmp = tempfile.mkdtemp(prefix="pearl-profile-")
    spec = next(s for s in build_graph({"bundle": str(args.bundle),
                                        "dataset_dir": tmp + "/ds"})
                if s.name == "policy_node")
    rclpy.init()
    node = PolicyNode(parameter_overrides=[Parameter(k, value=v)
                                           for k, v in spec.parameters.items()])
    joints = [e.joint for e in node.reader.entries if e.field == "position"]
    n = len(joints)

    def state() -> object:
        t = time.time()
        stamp = Time(sec=int(t), nanosec=int((t % 1) * 1e9))
        return joint_state_msg(joints, np.zeros(n), np.zeros(n), np.zeros(n), stamp)

    period = node.control_period
    for _ in range(20):  # warm-up: caches, the first publish
        node._on_joint_state(state())
        time.sleep(period)
    plain: list[float] = []
    prof = cProfile.Profile()
    try:
        for i in range(args.calls):
            msg = state()
            t0 = time.perf_counter()
            if i % 2:
                prof.enable()
            node._on_joint_state(msg)
            if i % 2:
                prof.disable()
            else:
                plain.append(time.perf_counter() - t0)
            time.sleep(max(0.0, period - (time.perf_counter() - t0)))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    ms = np.asarray(plain) * 1e3
    print(f"callback, unprofiled: median {np.median(ms):.3f} ms, p99 {np.percentile(ms, 99):.3f}"
          f" ms over {ms.size} calls; load average {os.getloadavg()[0]:.2f}")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
