"""The sim-to-real loop as one unattended run: evening on the robot, a night of collection,
the morning's retrain, the hot-swap into the running policy node, the same tasks again.

Stages (each a ``pearl-robot`` command in its own process, logged under ``logs/``):

1. **robot**: the firmware emulator (``pearl-robot emulate``: the MuJoCo twin behind the serial
   protocol on a real pseudo-terminal, with a stable ``--link`` path as a udev rule gives) with
   the physics of *this* robot (``robot_params``: not the twin's nominal model), and the adapt
   graph ``pearl-robot adapt --robot serial`` against it (bridge node, link checks, watchdogs,
   policy node, logger) with the shipped bundle.
2. **evening**: the robot runs the held-out tasks (``held_out_tasks`` x ``episodes_per_task``)
   and then holds the safe command; the graph keeps running.
3. **night**: the same adapt graph on the twin (``--robot twin``) at ``night_rtf`` times real
   time, on its own ROS domain, with the overnight schedule (training tasks, several episodes
   each, resets through the twin's reset service), writing its episode log. A serial robot runs
   in real time, so the accelerated night needs the twin; the logs have the same format.
4. **morning**: ``pearl-robot train --data NIGHT --sim-tasks N`` (the night's log mixed with
   simulation of the first N training tasks, which the night did not log), ``--export-bundle``,
   then ``pearl-robot bundle check --robot``. Warm start: ``--init`` with the running bundle's
   own weights-only ``checkpoint.pt`` (``export --with-checkpoint``, as ``make model`` ships
   it), else the checkpoint its provenance names when that exists here with the recorded
   sha256 (otherwise the retrain starts from scratch and the report says so). A warm start
   retrains with the checkpoint's own recipe (its config, no ``--config``: the networks must
   fit it), and the new bundle embeds its checkpoint too, so the next morning warm-starts from
   the model the robot then runs.
5. **hot-swap**: ``bundle`` set on the still-running policy node (the ``set_parameters`` service
   ``ros2 param set`` calls); the node validates it off the control path and swaps at the next
   episode boundary. ``episodes`` is raised so the schedule runs the same held-out tasks again
   (same order: the schedule is a pure function of its position), then one confirmation block.
6. **canary**: the node judges the new model's held-out episodes against the shipped model's
   returns on the same (task, trial) and rolls back when worse by more than ``canary_margin``
   (``pearl_robot.runtime.canary``); the confirmation block shows which model the robot kept.

Everything lands in ``OUT``: ``loop.json`` (stages, wall times, returns, verdict),
``diagnostics.jsonl`` (every /diagnostics status of the robot graph), the two episode logs, the
run directory of the retrain, the new bundle, and the report (``pearl_robot.loop.report``).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from pearl_robot.errors import ConfigError
from pearl_robot.loop.procs import Child, StageError, cli_command, run_stage

NICE_OFF_ROBOT = 0
"""CPU niceness added to the stages that run off the robot in reality (the night's twin, the
trainer). Measured on the shared 2-core machine (load ~13): at +5 the night's twin ran one
episode per 50 s instead of 0.5 s and the robot's link still timed out (the load came from
other processes), so it is 0; the loop re-arms a disarmed device before the morning and flags
measured phases in which it was disarmed instead."""

ROBOT_PARAMS: dict[str, Any] = {
    "payload_mass": 0.3,
    "friction_scale": [1.3, 0.8, 1.2],
    "damping_scale": [1.2, 1.0, 0.8],
    "strength_scale": [0.9, 0.85, 1.0],
    "latency_s": 0.02,
    "position_noise_std": 0.001,
    "velocity_noise_std": 0.01,
}
"""Physics of the emulated robot: a draw inside the family's ranges, away from nominal (the
real robot is never the MJCF as written)."""


@dataclass(frozen=True)
class LoopConfig:
    """One run of the loop (see :func:`quick` and :func:`full` for the two presets)."""

    seed: int = 0
    """Seeds the robot graph, the night, the emulator, the retrain and the report."""
    held_out_tasks: int = 4
    """The first this-many held-out tasks of the family are run on the robot, before and after."""
    episodes_per_task: int = 2
    """Consecutive episodes per held-out task (the first explores with z from the prior)."""
    night_tasks: int = 12
    """Training tasks the night visits (starting after the ``sim_tasks`` simulated ones)."""
    night_episodes_per_task: int = 4
    """Consecutive episodes per night task."""
    night_episodes: int = 384
    """Episodes of the night (3 s each at 20 Hz plus a reset: 384 ~ 20 min of robot time)."""
    night_rtf: float = 8.0
    """Real-time factor of the night's twin (sim time)."""
    sim_tasks: int = 8
    """``train --sim-tasks``: simulated training tasks mixed with the night's log."""
    train_iterations: int = 24
    """Retrain iterations."""
    train_config: str = ""
    """Training YAML of the retrain; empty: the package's config/train/<family>.yaml (the
    configuration the family's models are trained with), else the family's preset."""
    train_set: tuple[str, ...] = ()
    """Extra ``train --set KEY=VALUE`` overrides (step counts of an iteration, eval cadence)."""
    init_checkpoint: str = ""
    """Warm-start checkpoint for the retrain; empty: the running bundle's own checkpoint.pt,
    else the one its provenance names if it is on this disk (:func:`find_warm_start`)."""
    canary_margin: float = 0.2
    """Hot-swap canary margin (fraction of the old model's mean |return|); the node's
    provenance guard forgives a recorded held-out score that is worse by less than it."""
    override_guard: bool = False
    """When the policy node's provenance guard refuses the retrained bundle (its recorded
    held-out score in simulation is worse than the shipped one's by more than the margin):
    False keeps the shipped model, runs the after-swap block on it and the report says why;
    True does what an operator who wants the robot to decide does (``swap_override`` true,
    then the bundle again), and the canary judges it on the robot."""
    robot_params: dict[str, Any] = field(default_factory=lambda: dict(ROBOT_PARAMS))
    """Physics of the emulated robot."""
    reset_hold_s: float = 1.0
    """The serial robot has no reset routine: hold the safe command this long between episodes."""
    stage_timeout_s: float = 900.0
    """Longest any one stage may take before the run fails with that stage's log."""

    def __post_init__(self) -> None:
        for name in ("held_out_tasks", "episodes_per_task", "night_tasks",
                     "night_episodes_per_task", "night_episodes", "train_iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"loop {name} must be >= 1, got {getattr(self, name)}")
        if self.sim_tasks < 0:
            raise ConfigError(f"loop sim_tasks must be >= 0, got {self.sim_tasks}")
        if not self.night_rtf > 0:
            raise ConfigError(f"loop night_rtf must be > 0, got {self.night_rtf}")

    @property
    def robot_episodes(self) -> int:
        """Held-out episodes per phase (before, after)."""
        return self.held_out_tasks * self.episodes_per_task


def full(**overrides: Any) -> LoopConfig:
    """``make demo``: about 10 minutes on 2 cores; ~20 minutes of night robot time."""
    return replace(LoopConfig(held_out_tasks=4, episodes_per_task=2, night_tasks=16,
                              night_episodes_per_task=4, night_episodes=320, sim_tasks=40,
                              train_iterations=16, train_set=("train.eval_every=8",
                                                              "train.checkpoint_every=8")),
                   **overrides)


def quick(**overrides: Any) -> LoopConfig:
    """``pearl-robot demo --quick``: every stage, about a minute; a retrain of a few steps.
    Its held-out score comes from one 60-step evaluation, noise against the shipped model's,
    so the quick loop overrides the provenance guard: it exists to run the swap and the
    canary, which then judges the bundle on the robot."""
    return replace(LoopConfig(
        held_out_tasks=2, episodes_per_task=2, night_tasks=3, night_episodes_per_task=2,
        night_episodes=12, night_rtf=8.0, sim_tasks=2, train_iterations=2,
        reset_hold_s=0.5, override_guard=True, train_set=(
            "train.num_train_steps_per_itr=10",
            "train.num_tasks_sample=2", "train.num_steps_prior=60",
            "train.num_extra_rl_steps_posterior=0", "train.eval_every=2",
            "train.checkpoint_every=2", "train.num_eval_train_tasks=1",
            "train.num_steps_per_eval=60", "train.num_initial_steps=60",
            "pearl.meta_batch=2", "pearl.batch_size=32",
            "pearl.embedding_batch_size=16")), **overrides)


def train_config_file(cfg: LoopConfig, family: str) -> Path | None:
    """The retrain's YAML: the configured one, else config/train/<family>.yaml if present."""
    if cfg.train_config:
        return Path(cfg.train_config)
    from pearl_robot.ros.graph import share_dir, source_config_dir

    name = family.replace("-", "_") + ".yaml"
    for root in (source_config_dir(), (share_dir() or Path("/nonexistent")) / "config"):
        if (root / "train" / name).is_file():
            return root / "train" / name
    return None


def _domain_ids(seed: int) -> tuple[int, int]:
    """(robot graph, night graph): the robot's from ROS_DOMAIN_ID when set, the night's next
    to it, so the twin of the night never talks to the robot's nodes."""
    env = os.environ.get("ROS_DOMAIN_ID")
    robot = int(env) if env and env.isdigit() else random.SystemRandom().randint(1, 99)
    night = robot + 1 if robot < 100 else robot - 1
    return robot, night


def _ros_env(domain: int) -> dict[str, str]:
    return {"ROS_DOMAIN_ID": str(domain),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                                            "LOCALHOST"),
            "ROS_LOCALHOST_ONLY": os.environ.get("ROS_LOCALHOST_ONLY", "1"),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
            "OMP_NUM_THREADS": "1"}


def _params_file(path: Path, sections: dict[str, dict[str, Any]]) -> str:
    path.write_text(yaml.safe_dump({n: {"ros__parameters": p} for n, p in sections.items()},
                                   sort_keys=False))
    return str(path)


def _entries(dataset: Path) -> list[dict[str, Any]]:
    from pearl_robot.datalog.reader import manifest_entries

    if not (dataset / "manifest.jsonl").exists():
        return []
    return [e for e in manifest_entries(dataset) if e.get("status") != "quarantined"]


class WarmStart(NamedTuple):
    """Where the morning's retrain starts from, and why (for loop.json and the report)."""

    path: Path | None
    """The checkpoint to ``--init`` from; None: from scratch."""
    source: str
    """``bundle`` (its embedded checkpoint.pt), ``provenance`` (the path it records, found
    on this disk unchanged), ``given`` (``LoopConfig.init_checkpoint``) or ``none``."""


def find_warm_start(bundle: Path) -> WarmStart:
    """The checkpoint a bundle was exported from: its own weights-only copy
    (``provenance.embedded_checkpoint``, sha256-checked against the contract's ``files``),
    else the exporter's ``provenance.checkpoint`` when it is on this disk with the recorded
    sha256, else none. An embedded checkpoint that is missing, not a regular file or edited
    raises the loader's :class:`~pearl_robot.runtime.bundle.BundleError` (a corrupt bundle is
    not silently retrained from scratch); an unusable provenance path is just absent (it names
    the training machine's disk)."""
    from pearl_robot.runtime.bundle import (
        BundleContractError,
        read_checked_file,
        read_contract,
    )
    from pearl_robot.runtime.bundle import sha256_file as _sha

    contract = read_contract(bundle)
    prov = contract.provenance
    embedded = prov.get("embedded_checkpoint")
    if embedded:
        if not isinstance(embedded, str) or embedded not in contract.files:
            raise BundleContractError(f"{bundle}: provenance.embedded_checkpoint "
                                      f"{embedded!r} is not a file the contract lists")
        read_checked_file(bundle, contract, embedded)  # hashed here; train reads the file
        return WarmStart(bundle / embedded, "bundle")
    path = Path(str(prov.get("checkpoint", "")))
    if prov.get("checkpoint") and path.is_file() and _sha(path) == prov.get("checkpoint_sha256"):
        return WarmStart(path, "provenance")
    return WarmStart(None, "none")


def warm_start_checkpoint(bundle: Path) -> Path | None:
    """The checkpoint to warm-start a retrain of ``bundle``'s model from, or None
    (:func:`find_warm_start`)."""
    return find_warm_start(bundle).path


def retrain_argv(cfg: LoopConfig, family: str, night_ds: Path, run_dir: Path,
                 new_bundle: Path, init: Path | None) -> list[str]:
    """The morning's ``pearl-robot train`` command line. From scratch it trains with
    :func:`train_config_file`; a warm start without an explicit ``train_config`` takes the
    checkpoint's own config (``train --init`` without ``--config``): the family's YAML may
    describe other networks than the model the robot runs (``models/arm3`` is not the
    ``twin_arm.yaml`` recipe), which ``--init`` would refuse. The step overrides
    (``train_set``) apply either way; the bundle embeds its checkpoint for the next morning."""
    argv = ["train", "--family", family, "--data", str(night_ds), "--sim-tasks",
            str(cfg.sim_tasks), "--iterations", str(cfg.train_iterations), "--seed",
            str(cfg.seed), "--out", str(run_dir), "--export-bundle", str(new_bundle),
            "--with-checkpoint", "--no-progress", "--no-tensorboard"]
    tcfg = train_config_file(cfg, family) if init is None or cfg.train_config else None
    if tcfg is not None:
        argv += ["--config", str(tcfg)]
    for item in cfg.train_set:
        argv += ["--set", item]
    if init is not None:
        argv += ["--init", str(init)]
    return argv


class Stages:
    """Wall-clock bookkeeping of the stages (printed as they go, kept in loop.json)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.rows: list[dict[str, Any]] = []
        self._open: tuple[str, float] | None = None

    def begin(self, name: str, what: str) -> None:
        self._open = (name, time.monotonic())
        print(f"[{time.monotonic() - self.t0:6.1f} s] {name}: {what}", flush=True)

    def end(self, **info: Any) -> None:
        assert self._open is not None
        name, t = self._open
        wall = time.monotonic() - t
        # The machine's load says how much of the wall time was waiting for a core.
        self.rows.append({"stage": name, "wall_s": round(wall, 2),
                          "load_avg_1min": round(os.getloadavg()[0], 1), **info})
        extra = ", ".join(f"{k} {v}" for k, v in info.items())
        print(f"[{time.monotonic() - self.t0:6.1f} s] {name} done in {wall:.1f} s"
              f"{'; ' + extra if extra else ''}", flush=True)
        self._open = None


@dataclass
class _Run:
    """What the stages of one loop share: the plan, its places, and what has started."""

    cfg: LoopConfig
    out: Path
    bundle: Path
    family: Any
    held_out: list[int]
    night_idx: list[int]
    robot_ds: Path
    night_ds: Path
    robot_domain: int
    night_domain: int
    stages: Stages
    result: dict[str, Any]
    children: list[Child] = field(default_factory=list)
    probe: Any = None
    robot: Child | None = None
    new_sha: str = ""

    @property
    def logs(self) -> Path:
        return self.out / "logs"


def run_loop(cfg: LoopConfig, out: Path, bundle: Path) -> dict[str, Any]:
    """Run every stage; returns (and writes to ``out/loop.json``) what happened."""
    from pearl_robot.runtime.bundle import read_contract
    from pearl_robot.tasks.registry import make_family

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundle = bundle.resolve()
    contract = read_contract(bundle)
    family = make_family(str(dict(contract.task_family)["name"]))
    held_out = list(family.eval_indices)[:cfg.held_out_tasks]
    train_idx = list(family.train_indices)
    night_idx = train_idx[cfg.sim_tasks:cfg.sim_tasks + cfg.night_tasks]
    if len(night_idx) < cfg.night_tasks:
        raise ConfigError(f"the family has {len(train_idx)} training tasks; sim_tasks "
                          f"{cfg.sim_tasks} + night_tasks {cfg.night_tasks} do not fit")
    robot_domain, night_domain = _domain_ids(cfg.seed)
    robot_ds, night_ds = out / "robot-log", out / "night-log"
    stages = Stages()
    result: dict[str, Any] = {
        "config": asdict(cfg), "bundle": str(bundle), "bundle_sha256": contract.contract_sha256,
        "family": family.name, "held_out_tasks": held_out, "night_tasks": night_idx,
        "sim_tasks": train_idx[:cfg.sim_tasks], "robot_domain": robot_domain,
        "night_domain": night_domain, "robot_dataset": str(robot_ds),
        "night_dataset": str(night_ds), "stages": stages.rows,
    }
    run = _Run(cfg, out, bundle, family, held_out, night_idx, robot_ds, night_ds, robot_domain,
               night_domain, stages, result)
    try:
        _robot_stage(run)
        _evening_stage(run)
        _night_stage(run)
        _morning_stage(run)
        _swap_stage(run)
    finally:
        for child in reversed(run.children):
            child.stop()
        if run.probe is not None:
            with (out / "diagnostics.jsonl").open("w") as f:
                for t, name, level, message, values in run.probe.diagnostics:
                    f.write(json.dumps({"t": t, "name": name, "level": level,
                                        "message": message, "values": values}) + "\n")
            run.probe.close()
        result["wall_s"] = round(time.monotonic() - stages.t0, 1)
        (out / "loop.json").write_text(json.dumps(result, indent=1, default=str))
    result.update(summarize_robot_log(robot_ds, cfg.robot_episodes, cfg.episodes_per_task,
                                      contract.contract_sha256, run.new_sha))
    (out / "loop.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def _robot_stage(run: _Run) -> None:
    """The firmware emulator on a pseudo-terminal and the serial adapt graph, armed."""
    from pearl_robot.ros.loop_probe import OperatorProbe

    cfg, out = run.cfg, run.out
    run.stages.begin("robot", "firmware emulator on a pseudo-terminal + the serial adapt graph")
    link = out / "ttyPEARL"
    emu = Child("emulator", cli_command(
        "emulate", "--link", str(link), "--seed", str(cfg.seed),
        "--twin-params", json.dumps(cfg.robot_params), "--stats-every", "30"), run.logs)
    run.children.append(emu)
    emu.wait_for("device path", lambda: "link:" in emu.text() and link.exists(), 60)
    pf = _params_file(out / "robot-params.yaml", {
        "policy_node": {"tasks": ",".join(map(str, run.held_out)),
                        "episodes_per_task": cfg.episodes_per_task,
                        "seed": cfg.seed, "reset_hold_s": cfg.reset_hold_s,
                        "canary_episodes": cfg.robot_episodes,
                        "canary_margin": cfg.canary_margin},
        "logger_node": {"dataset_dir": str(run.robot_ds), "robot_id": "arm3-emulated"},
        "bridge_node": {"port": str(link)}})
    run.probe = probe = OperatorProbe(run.robot_domain)
    run.robot = robot = Child("robot-graph", cli_command(
        "adapt", "--robot", "serial", "--port", str(link), "--bundle", str(run.bundle),
        "--dataset-dir", str(run.robot_ds), "--params-file", pf, "--episodes",
        str(cfg.robot_episodes)), run.logs, env=_ros_env(run.robot_domain))
    run.children.append(robot)
    robot.wait_for("serial link up", lambda: _link_ready(probe), 180)
    run.result["operator"] = _ensure_armed(probe, robot, "before the evening")
    run.stages.end(port=str(link), pty=emu.text().split("device:")[1].split()[0])


def _evening_stage(run: _Run) -> None:
    """The shipped bundle on the held-out tasks, over the serial link."""
    cfg, robot, n = run.cfg, run.robot, run.cfg.robot_episodes
    assert robot is not None
    run.stages.begin("evening", f"shipped bundle on held-out tasks {run.held_out} "
                     f"x{cfg.episodes_per_task} over the serial link")
    t_phase = time.time()
    robot.wait_for(f"{n} closed episodes", lambda: len(_entries(run.robot_ds)) >= n,
                   cfg.stage_timeout_s)
    run.result["commands_ignored"] = {
        "evening": commands_ignored(run.probe.diagnostics, t_phase, time.time())}
    run.stages.end(episodes=n, commands_ignored=run.result["commands_ignored"]["evening"].ignored)


def _night_stage(run: _Run) -> None:
    """A night of training tasks on the twin, faster than real time, logged."""
    cfg, out = run.cfg, run.out
    run.stages.begin("night", f"{cfg.night_episodes} episodes on training tasks {run.night_idx}"
                     f" x{cfg.night_episodes_per_task} on the twin at {cfg.night_rtf:g}x")
    npf = _params_file(out / "night-params.yaml", {
        "policy_node": {"tasks": ",".join(map(str, run.night_idx)),
                        "episodes_per_task": cfg.night_episodes_per_task,
                        "seed": cfg.seed + 1, "reset_timeout_s": 5.0},
        "logger_node": {"dataset_dir": str(run.night_ds), "robot_id": "arm3-twin-night"},
        "twin_node": {"seed": cfg.seed + 1}})
    night = Child("night-graph", cli_command(
        "adapt", "--robot", "twin", "--real-time-factor", str(cfg.night_rtf),
        "--bundle", str(run.bundle), "--dataset-dir", str(run.night_ds), "--params-file", npf,
        "--episodes", str(cfg.night_episodes), "--exit-when-done",
        "--duration", str(cfg.stage_timeout_s)), run.logs, env=_ros_env(run.night_domain),
        niceness=NICE_OFF_ROBOT)
    run.children.append(night)
    night.check(cfg.stage_timeout_s + 60)
    night_entries = _entries(run.night_ds)
    robot_s = sum(float(e.get("duration_s", 0.0)) for e in night_entries)
    run.stages.end(episodes=len(night_entries), robot_minutes=round(robot_s / 60, 1))
    if len(night_entries) < cfg.night_episodes:
        raise StageError(f"the night closed {len(night_entries)} of {cfg.night_episodes} "
                         f"episodes; see {night.log_path}")
    run.result["night"] = {"episodes": len(night_entries), "robot_s": robot_s,
                           "wall_s": run.stages.rows[-1]["wall_s"],
                           "transitions": sum(int(e.get("transitions", 0))
                                              for e in night_entries)}


def _morning_stage(run: _Run) -> None:
    """Retrain from the night's log and simulated tasks, export, check the bundle."""
    from pearl_robot.runtime.bundle import read_contract

    cfg, out, logs = run.cfg, run.out, run.logs
    warm = WarmStart(Path(cfg.init_checkpoint), "given") if cfg.init_checkpoint else \
        find_warm_start(run.bundle)
    init = warm.path
    run.stages.begin("morning", "retrain from the night's log + simulated tasks, export, "
                     f"check ({'warm start from ' + str(init) if init else 'from scratch'})")
    new_bundle = out / "bundles" / "retrained"
    train_argv = retrain_argv(cfg, run.family.name, run.night_ds, out / "retrain", new_bundle,
                              init)
    trained = run_stage("retrain", cli_command(*train_argv), logs, cfg.stage_timeout_s,
                        env={"OMP_NUM_THREADS": "1"}, niceness=NICE_OFF_ROBOT)
    checked = run_stage("bundle-check", cli_command(
        "bundle", "check", str(new_bundle), "--robot", "--ticks", "200"), logs, 300)
    run.new_sha = read_contract(new_bundle).contract_sha256
    run.stages.end(bundle=run.new_sha[:12], warm_start=bool(init))
    run.result["retrain"] = {"bundle": str(new_bundle), "bundle_sha256": run.new_sha,
                             "warm_start": str(init) if init else None,
                             "warm_start_source": warm.source,
                             "train_log": str(trained.log_path),
                             "check_log": str(checked.log_path),
                             "train_wall_s": round(trained.wall_s, 1),
                             "held_out_sim": _train_summary(trained.text())}


def _swap_stage(run: _Run) -> None:
    """The new bundle through the running node's ``bundle`` parameter, the held-out tasks
    again, and the canary's confirmation block."""
    cfg, robot, probe = run.cfg, run.robot, run.probe
    n, ept = cfg.robot_episodes, cfg.episodes_per_task
    assert robot is not None
    new_bundle = Path(run.result["retrain"]["bundle"])
    run.stages.begin("hot-swap", "bundle parameter on the running policy node, then the "
                     "held-out tasks again")
    if not robot.alive():
        raise StageError(f"the robot graph stopped during the night; see {robot.log_path}")
    total = 2 * n + ept
    run.result["operator"] += _ensure_armed(probe, robot, "before the hot-swap")
    swap = run.result["swap"] = _offer_bundle(probe, new_bundle, cfg.override_guard)
    if swap["guard"] == "refused":
        print(f"  hot-swap refused by the provenance guard, the shipped model stays: "
              f"{swap['reason']}", flush=True)
    else:
        if swap["guard"] == "overridden":
            run.result["operator"].append(
                f"before the hot-swap: the node refused the bundle ({swap['reason']}); set "
                "swap_override true and the bundle again (override_guard), so the canary "
                "judges it on the robot")
            print(f"  operator: {run.result['operator'][-1]}", flush=True)
        # As an operator would: wait until /diagnostics says the bundle is validated (it
        # swaps at the next episode start), then ask for the episodes.
        robot.wait_for("the new bundle validated", lambda: _swap_state(probe) == "ready", 120)
        if swap["guard"] == "overridden":
            probe.set_parameters("policy_node", {"swap_override": False})
    t_phase = time.time()
    probe.set_parameters("policy_node", {"episodes": total})
    robot.wait_for(f"{n} episodes of the new bundle",
                   lambda: len(_entries(run.robot_ds)) >= 2 * n, cfg.stage_timeout_s)
    run.result["commands_ignored"]["after"] = commands_ignored(probe.diagnostics, t_phase,
                                                               time.time())
    run.stages.end(commands_ignored=run.result["commands_ignored"]["after"].ignored)
    run.stages.begin("canary", f"verdict, then one block of {ept} episodes with the model kept")
    robot.wait_for("the confirmation block", lambda: len(_entries(run.robot_ds)) >= total,
                   cfg.stage_timeout_s)
    run.stages.end()


def _link_ready(probe: Any) -> bool:
    st = probe.latest("serial link")
    return st is not None and st[2].get("link") == "ready"


def _armed(probe: Any) -> bool:
    """The bridge's newest /diagnostics: link ready and the device armed."""
    st = probe.latest("serial link")
    return st is not None and st[2].get("link") == "ready" and st[2].get("armed") == "True"


class CommandsIgnored(NamedTuple):
    """How many of a measured phase's commands the device ignored for being disarmed.

    Counted per command, not from the 1 Hz status's ``armed`` flag: one late tick makes the
    bridge disarm for a few milliseconds (75 ms after the last command, re-armed ahead of the
    next), which a status sample that falls in it would show as a whole disarmed second."""

    ignored: int
    """Commands the bridge sent to a disarmed device with no ARM ahead of them (its
    ``events.commands_while_disarmed``)."""
    ticks: int
    """Control ticks of the policy in the phase (each one sends a command)."""


def _counter_at(diagnostics: Any, name: str, key: str, t: float) -> int:
    """A cumulative /diagnostics counter's value in the newest status at or before ``t``
    (0 before the first status: counters start at 0 and are published once non-zero)."""
    value = 0
    for ts, status, _, _, values in list(diagnostics):
        if ts > t:
            break
        if name in status:
            value = int(float(values.get(key, 0) or 0))
    return value


def commands_ignored(diagnostics: Any, t0: float, t1: float) -> CommandsIgnored:
    """Counter differences over [t0, t1] from the robot graph's /diagnostics history
    (``(t, name, level, message, values)`` rows in time order). Statuses come once a second,
    so each end of the phase is known to within a second (20 ticks)."""
    key = "events.commands_while_disarmed"
    return CommandsIgnored(
        ignored=_counter_at(diagnostics, "serial link", key, t1)
        - _counter_at(diagnostics, "serial link", key, t0),
        ticks=_counter_at(diagnostics, "control loop", "ticks", t1)
        - _counter_at(diagnostics, "control loop", "ticks", t0))


def _ensure_armed(probe: Any, robot: Child, when: str, settle_s: float = 3.0
                  ) -> list[str]:
    """What an operator does before a measured phase: if the device is disarmed (a link
    timeout, a reset: the bridge does not re-arm by itself), look at why and arm it again
    through ``/pearl/robot/arm``. Each action is returned for the report."""
    actions: list[str] = []
    deadline = time.monotonic() + settle_s  # arm_on_start may still be under way
    while not _armed(probe) and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(5):
        if _armed(probe):
            return actions
        st = probe.latest("serial link")
        why = st[2].get("last_fault", "") if st else "no status"
        ok, msg = probe.call_trigger("/pearl/robot/arm")
        actions.append(f"{when}: device disarmed (last fault: {why or 'none'}); called "
                       f"/pearl/robot/arm: {msg}")
        print(f"  operator: {actions[-1]}", flush=True)
        try:
            robot.wait_for("the device armed again", lambda: _armed(probe), 10)
        except StageError:
            if not robot.alive():
                raise
    if not _armed(probe):
        raise StageError(f"{when}: the robot could not be armed (see {robot.log_path})")
    return actions


def _offer_bundle(probe: Any, bundle: Path, override: bool) -> dict[str, Any]:
    """``ros2 param set /policy_node bundle DIR``. The node's provenance guard may refuse a
    bundle that is worse in simulation: that is an outcome (the shipped model stays), or with
    ``override`` a second request with ``swap_override`` set. Any other refusal (integrity,
    interface) is a broken retrain and stops the loop."""
    from pearl_robot.ros.loop_probe import ProbeError
    from pearl_robot.runtime.canary import GUARD_REFUSAL

    try:
        probe.set_parameters("policy_node", {"bundle": str(bundle)})
        return {"bundle": str(bundle), "guard": "passed", "reason": ""}
    except ProbeError as exc:
        reason = str(exc)
        if GUARD_REFUSAL not in reason:
            raise StageError(f"the policy node refused the retrained bundle: {reason}") from exc
    if not override:
        return {"bundle": str(bundle), "guard": "refused", "reason": reason}
    probe.set_parameters("policy_node", {"swap_override": True})
    probe.set_parameters("policy_node", {"bundle": str(bundle)})
    return {"bundle": str(bundle), "guard": "overridden", "reason": reason}


def _swap_state(probe: Any) -> str:
    """The policy node's hot-swap state from its newest /diagnostics status; a refused
    bundle stops the loop with the node's reason."""
    st = probe.latest("control loop")
    if st is None:
        return ""
    state = st[2].get("swap", "")
    if state == "failed":
        raise StageError(f"the policy node refused the retrained bundle: {st[1]}")
    return state


def _train_summary(text: str) -> dict[str, float]:
    """The retrain's own held-out line (simulation, twin physics), for the report."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("held-out return after adaptation:"):
            try:
                out["final"] = float(line.split(":")[1].split("(")[0])
                out["first"] = float(line.rsplit(":", 1)[1].strip(" )"))
            except (IndexError, ValueError):
                pass
    return out


def summarize_robot_log(dataset: Path, n: int, ept: int, old_sha: str, new_sha: str
                        ) -> dict[str, Any]:
    """Returns before/after per task from the robot's manifest, and the canary's verdict as
    the node recorded it (the /pearl/task JSON in the manifest)."""
    entries = sorted(_entries(dataset), key=lambda e: int(e["episode"]))
    rows = []
    for i, e in enumerate(entries):
        task = e.get("task") or {}
        phase = "before" if i < n else "after" if i < 2 * n else "confirm"
        rows.append({"episode": int(e["episode"]), "task": int(task.get("task", -1)),
                     "trial": i % ept if phase != "confirm" else (i - 2 * n) % ept,
                     "phase": phase, "return": float(e["return"]),
                     "model_sha": str(e.get("model_sha", "")),
                     "transitions": int(e.get("transitions", 0))})
    verdict = None
    for e in entries:
        last = ((e.get("task") or {}).get("canary") or {}).get("last")
        if last and last.get("new_sha256") == new_sha:
            verdict = last
    kept = rows[-1]["model_sha"] if rows else ""
    return {"episodes": rows, "canary": verdict,
            "kept_model": "retrained" if kept == new_sha else
            "shipped" if kept == old_sha else kept}
