"""A/B of ``PolicyRuntime.tick``: this tree's runtime against the one of an earlier revision,
on the same bundle, in one process, interleaved in blocks (load swings hit both alike), with a
bare ``InferenceSession.run`` of the actor as the floor.

The earlier ``runtime/policy.py`` is taken from git (``git show REV:...``) and imported under
another module name; it shares this tree's bundle loader and belief, so the difference is the
tick's own code (observation checks, reward/age conversion, error handling).

    python -m bench.ab_tick --base 71984f9            # about 1 min on 2 loaded cores
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _old_policy(rev: str):  # noqa: ANN202 - a module
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:pearl_robot/runtime/policy.py"],
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "base_policy.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("base_policy", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["base_policy"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--family", default="twin-arm")
    p.add_argument("--blocks", type=int, default=40, help="blocks of 100 calls per case")
    args = p.parse_args()

    from pearl_robot.export.testing import write_test_bundle
    from pearl_robot.runtime import policy as new_mod
    from pearl_robot.runtime.bundle import load_bundle

    old_mod = _old_policy(args.base)
    d = Path(tempfile.mkdtemp()) / "bundle"
    write_test_bundle(d, args.family, hidden_sizes=(300, 300, 300),
                      encoder_hidden_sizes=(200, 200, 200))
    b = load_bundle(d)
    c = b.contract
    rng = np.random.default_rng(0)
    lo = c.obs_low if c.obs_low is not None else -np.ones(c.obs_dim)
    hi = c.obs_high if c.obs_high is not None else np.ones(c.obs_dim)
    obs = rng.uniform(0.2 * lo, 0.2 * hi, (2000, c.obs_dim))
    rts = {"base": old_mod.PolicyRuntime(b, old_mod.RuntimeConfig(z_schedule="step_mean"),
                                         rng=np.random.default_rng(0)),
           "this": new_mod.PolicyRuntime(b, new_mod.RuntimeConfig(z_schedule="step_mean"),
                                         rng=np.random.default_rng(0))}
    feed = {"obs": obs[:1].astype(np.float32), "z": np.zeros((1, c.latent_dim), np.float32),
            "eps": np.zeros((1, c.action_dim), np.float32)}
    times: dict[str, list[int]] = {"base": [], "this": [], "bare_actor": []}
    pc = time.perf_counter_ns
    for rep in range(args.blocks):
        for k in times:
            rt = rts.get(k)
            for i in range(100):
                o = obs[(rep * 100 + i) % len(obs)]
                t0 = pc()
                if rt is None:
                    b.actor.run(["action_mean"], feed)
                else:
                    out = rt.tick(o, -1.0, obs_age=0.01)
                times[k].append(pc() - t0)
            if rt is not None:
                assert not out.fault, out.reason
    med = {k: float(np.median(v)) / 1e3 for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:10s} median {med[k]:6.1f} us  p99 {np.percentile(v, 99) / 1e3:8.1f} us")
    print(f"this/base {med['this'] / med['base']:.3f}; this/bare_actor "
          f"{med['this'] / med['bare_actor']:.2f}; base/bare_actor "
          f"{med['base'] / med['bare_actor']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
