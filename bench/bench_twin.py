"""Environment stepping throughput of the twin and cheetah against the raw physics floor.

floor:      MuJoCo's own C loop (``mujoco.rollout`` on the calling thread, i.e. ``mj_step``
            per physics step in C) over the same 16 task instances (their randomized models and
            reset states) and the same action sequence held for frame_skip physics steps (25 for
            the arm at 2 ms / 20 Hz, 5 for cheetah). Reported as control steps per second.
floor_call: the same physics as one ``mj_step(m, d, frame_skip)`` call per control step with
            the control written first: the least any Python env must do per step.
single:     ``env.step`` of one environment (random actions, resets at the horizon included).
vector:     ``VectorMetaEnv.step`` over the 16 environments, 1 and 2 threads (and the default
            count when different), in env steps per second over all envs.
rollout2:   the floor's rollout with 2 threads: the parallel physics ceiling on this machine
            (the sampler is closed-loop and cannot use open-loop rollouts directly).

Ratios are to ``floor`` (goal: vectorized >= 0.5): the median over ``--reps`` interleaved
repetitions of the ratio within each repetition (every variant runs back to back per
repetition, so a load spike from other processes hits the floor and the env alike).

    .venv/bin/python -m bench.run_all --only bench_twin
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "twin.json"
FAMILIES = {"twin-arm": 25, "cheetah-vel": 5}
N_VEC = 16


def bench_family(name: str, frame_skip: int, n_steps: int, reps: int) -> dict[str, float]:
    import mujoco
    from mujoco import rollout

    from pearl_robot.tasks.registry import make_family
    from pearl_robot.twin.vector import VectorMetaEnv, default_threads

    family = make_family(name)
    tasks = [family.tasks[i % len(family.tasks)] for i in range(N_VEC)]
    vec_steps = max(1, n_steps // N_VEC)
    rng = np.random.default_rng(0)
    probe = family.make_env(seed=0)
    actions = rng.uniform(probe.action_low, probe.action_high, (n_steps, N_VEC, probe.action_dim))
    assert round(probe.control_period / probe.model.opt.timestep) == frame_skip, name

    # the 16 task instances after reset: their models (task physics) and start states
    vec = VectorMetaEnv.from_family(family, N_VEC, seed=0, n_threads=1)
    vec.set_tasks(tasks)
    vec.reset(list(range(N_VEC)))
    models = [e.model for e in vec.envs]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    states = np.zeros((N_VEC, mujoco.mj_stateSize(models[0], spec)))
    for i, e in enumerate(vec.envs):
        mujoco.mj_getState(e.model, e.data, states[i], spec)
    # the same control sequence, held for frame_skip physics steps per control step
    ctrl = np.repeat(actions[:vec_steps].transpose(1, 0, 2), frame_skip, axis=1)
    ctrl = np.clip(ctrl, probe.action_low, probe.action_high)
    vec.close()

    env = family.make_env(seed=0)
    env.set_task(tasks[0])
    m, d = env.model, env.data

    def floor_call() -> None:
        env.reset(seed=1)
        for k in range(n_steps):
            d.ctrl[:] = np.clip(actions[k, 0], env.action_low, env.action_high)
            mujoco.mj_step(m, d, frame_skip)

    def single() -> None:
        env.reset(seed=1)
        for k in range(n_steps):
            if env.step(actions[k, 0]).truncated:
                env.reset()

    vecs = {}
    for threads in sorted({1, 2, default_threads()}):
        vecs[threads] = VectorMetaEnv.from_family(family, N_VEC, seed=0, n_threads=threads)
        vecs[threads].set_tasks(tasks)

    def vector(vec: VectorMetaEnv) -> None:
        vec.reset(list(range(N_VEC)))
        for k in range(vec_steps):
            step = vec.step(actions[k])
            done = step.truncated | step.terminated
            if done.any():
                vec.reset(mask=done)

    r0 = rollout.Rollout(nthread=0)
    r2 = rollout.Rollout(nthread=2)
    d0 = [mujoco.MjData(models[0])]
    d2 = [mujoco.MjData(models[0]) for _ in range(2)]
    n_vec = vec_steps * N_VEC
    runs = {"floor": (lambda: r0.rollout(models, d0, states, ctrl), n_vec),
            "rollout2": (lambda: r2.rollout(models, d2, states, ctrl), n_vec),
            "floor_call": (floor_call, n_steps), "single": (single, n_steps)}
    for threads, vec in vecs.items():
        runs[f"vector_t{threads}"] = (lambda vec=vec: vector(vec), n_vec)
    # Interleaved repetitions: each repetition measures every variant back to back, and ratios
    # are taken within a repetition, so load from other processes hits floor and env alike.
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, (fn, n) in runs.items():
            t0 = time.perf_counter()
            fn()
            rates[k].append(n / (time.perf_counter() - t0))
    r0.close()
    r2.close()
    for vec in vecs.values():
        vec.close()
    out: dict[str, float] = {k: statistics.median(v) for k, v in rates.items()}
    for k in runs:
        if k != "floor":
            out[f"{k}_ratio"] = statistics.median(
                a / b for a, b in zip(rates[k], rates["floor"], strict=True))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    p.add_argument("--steps", type=int, default=None, help="control steps per measurement")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    n_steps = args.steps or (320 if args.quick else 3200)
    reps = args.reps or (2 if args.quick else 5)
    results = {"n_envs_vector": N_VEC, "steps": n_steps, "reps": reps, "families": {}}
    print(f"{'family':<12} {'measure':<14} {'env steps/s':>12} {'x floor':>8}")
    for name, fs in FAMILIES.items():
        r = bench_family(name, fs, n_steps, reps)
        results["families"][name] = r
        for k, v in r.items():
            if not k.endswith("_ratio"):
                ratio = r.get(f"{k}_ratio", 1.0)
                print(f"{name:<12} {k:<14} {v:12.0f} {ratio:8.2f}")
    import mujoco

    from pearl_robot.twin.vector import default_threads

    results["mujoco"] = mujoco.__version__
    results["threads_default"] = default_threads()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
