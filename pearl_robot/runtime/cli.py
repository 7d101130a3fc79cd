"""Inspect or validate a model bundle.

  pearl-robot bundle info PATH            what the bundle is: robot interface, model, provenance
  pearl-robot bundle check PATH           full validation as the robot will do it (hashes,
                                          shapes, golden vectors) plus a short timed run
  pearl-robot bundle check PATH --robot   ... and against the robot's declared joints
                                          (the twin's MJCF in sim/, or --robot FILE.xml)

`check` exits 0 when the bundle would be accepted, 1 with the reason otherwise; `info` prints
what the contract says and exits 1, naming every missing, corrupted or non-regular file, when
the bundle would be refused. Needs no torch.

examples:
  pearl-robot bundle info models/arm3
  pearl-robot bundle check models/arm3 --robot
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pearl_robot.errors import PearlRobotError
from pearl_robot.runtime.bundle import (
    HASHED_FILES,
    BundleError,
    BundleHashError,
    Contract,
    RobotExpectation,
    load_bundle,
    parse_contract,
    read_bundle_file,
    read_contract,
    read_contract_json,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("info", "check"), help="info: summary; check: "
                        "validate (exit status 1 with the reason when it would be refused)")
    parser.add_argument("path", type=Path, help="bundle directory (from `pearl-robot export`)")
    parser.add_argument("--robot", nargs="?", const="default", default=None, metavar="MJCF",
                        help="check: also check the contract against the robot's joints, "
                        "limits and control period (MJCF path; default: the twin in sim/)")
    parser.add_argument("--joints", default=None, metavar="A,B,...",
                        help="check: expected joint (command) names in order, instead of "
                        "--robot")
    parser.add_argument("--ticks", type=int, default=500,
                        help="check: control ticks to time with synthetic observations "
                        "(0 to skip; default 500)")
    parser.add_argument("--json", action="store_true", help="info: print the contract JSON")


def _robot(args: argparse.Namespace) -> RobotExpectation | None:
    if args.joints:
        return RobotExpectation(tuple(n.strip() for n in args.joints.split(",") if n.strip()))
    if args.robot is None:
        return None
    try:
        from pearl_robot.robot.description import load_robot_spec
    except ImportError as exc:
        raise PearlRobotError(f"--robot needs pearl_robot.robot.description ({exc})") from exc
    spec = load_robot_spec(None if args.robot == "default" else args.robot)
    return RobotExpectation.from_robot_spec(spec)


def _fmt_limits(c: Contract) -> list[str]:
    return [f"    {n:<16} [{lo:+.4g}, {hi:+.4g}] {u}" for n, lo, hi, u in
            zip(c.action_names, c.action_low, c.action_high, c.action_units)]


def summary(path: Path, c: Contract) -> str:
    """Human-readable description of a bundle's contract."""
    prov: dict[str, Any] = c.provenance
    fam = c.task_family
    lines = [
        f"bundle      {path}",
        f"identity    {c.contract_sha256}",
        f"schema      {c.schema}",
        f"task family {fam.get('name', '?')} ({fam.get('n_tasks', '?')} tasks, "
        f"{fam.get('n_eval', '?')} held out)",
        f"control     {c.control_period:g} s ({1.0 / c.control_period:g} Hz), command "
        f"interface {c.command_interface}",
        f"observation {c.obs_dim}: " + ", ".join(f"{n} [{u}]" for n, u in
                                                 zip(c.obs_names, c.obs_units)),
        f"commands    {c.action_dim}:",
        *_fmt_limits(c),
        f"latent      {c.latent_dim} (information bottleneck: "
        f"{'on' if c.information_bottleneck else 'off'})",
        "context     " + ", ".join(f"{f.name}[{f.size}]" for f in c.context_fields)
        + (f" (reward = info[{c.context_reward_key!r}])" if c.context_reward_key else ""),
        f"posterior   {c.posterior_convention}, recommended window "
        f"{c.recommended_window} transitions, var floor {c.var_floor:g}",
        f"golden      tolerance {c.golden_atol:g} + {c.golden_rtol:g}*|x|",
    ]
    if c.inference_mode != "pog":
        belief = f"belief      {c.inference_mode}, actor z input: {c.policy_input}"
        if c.inference_mode == "particles":
            belief += (f"; {c.num_particles} particles (z is one of them), context reward "
                       f"std {c.particle_reward_std:g}")
        elif c.inference_mode == "pooled":
            belief += f"; step state {c.step_window} x {c.step_features}"
        lines.insert(-1, belief)
    if prov:
        lines.append(f"exported    {prov.get('exported_at', '?')} on {prov.get('host', '?')} "
                     f"(torch {prov.get('torch', '?')}, onnxruntime "
                     f"{prov.get('onnxruntime', '?')}, opset {prov.get('onnx_opset', '?')}, "
                     f"git {str(prov.get('exporter_git_revision'))[:12]})")
        if prov.get("checkpoint"):
            lines.append(f"checkpoint  {prov['checkpoint']} (sha256 "
                         f"{str(prov.get('checkpoint_sha256', '?'))[:16]}...)")
        if prov.get("embedded_checkpoint"):
            lines.append(f"            weights-only copy in the bundle: "
                         f"{prov['embedded_checkpoint']} (for warm-starting a retrain)")
        trainer = prov.get("trainer") or {}
        if trainer:
            lines.append("training    " + ", ".join(f"{k}={v}" for k, v in trainer.items()))
        err = prov.get("parity_max_abs_error") or {}
        if err:
            lines.append(f"parity      max |onnx - torch| {max(err.values()):.2e} on "
                         f"{prov.get('parity_recorded_rows', 0)} recorded "
                         f"({prov.get('parity_recorded_source')}) + "
                         f"{prov.get('parity_random_rows', 0)} random rows")
    lines.append("files")
    lines += [f"    {n:<14} sha256 {h[:16]}..." for n, h in c.files.items()]
    return "\n".join(lines)


def timed_ticks(path: Path, n: int) -> tuple[float, float]:
    """Median and p99 (microseconds) of ``n`` full control ticks on synthetic observations."""
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig

    rt = PolicyRuntime(path, RuntimeConfig(z_schedule="step_mean"),
                       rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    c = rt.bundle.contract
    if c.obs_low is not None and c.obs_high is not None:  # inside the declared range, or the
        obs = rng.uniform(c.obs_low, c.obs_high, (n + 50, c.obs_dim))  # range check would
    else:                                                 # time only the safe path
        obs = rng.standard_normal((n + 50, c.obs_dim))
    times = []
    rt.begin_episode()
    for i in range(n + 50):
        t0 = time.perf_counter()
        out = rt.tick(obs[i], reward=-1.0)
        times.append(time.perf_counter() - t0)
        if out.safe:
            raise PearlRobotError(f"timed run: tick {i} gave the safe command ({out.reason}) "
                                  f"on a synthetic observation; the timing would not be the "
                                  f"policy's")
    t = np.array(times[50:]) * 1e6
    return float(np.median(t)), float(np.percentile(t, 99))


def file_problems(path: Path, c: Contract) -> list[str]:
    """Every listed file's problem (missing, not a regular file, too large, wrong sha256),
    all of them rather than the first: ``info`` is what an operator runs to see what is
    wrong with a bundle. Listed: the :data:`HASHED_FILES` and whatever else the contract's
    ``files`` names (an embedded ``checkpoint.pt``)."""
    problems = []
    for name in (*HASHED_FILES, *(n for n in c.files if n not in HASHED_FILES)):
        try:
            blob = read_bundle_file(path, name)
        except BundleError as exc:
            problems.append(str(exc))
            continue
        got = hashlib.sha256(blob).hexdigest()
        if got != c.files.get(name):
            problems.append(f"{name}: sha256 {got[:16]}... differs from the contract's "
                            f"{str(c.files.get(name))[:16]}... (corrupted or replaced)")
    return problems


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        show = (lambda c: json.dumps(c.raw, indent=2)) if args.json else \
            (lambda c: summary(args.path, c))
        try:
            c = read_contract(args.path)
        except BundleHashError as exc:
            # still show what the bundle claims to be: that helps find the right re-export
            c = parse_contract(read_contract_json(args.path))
            print(show(c))
            print(f"pearl-robot bundle: error: {exc}; this bundle would be refused",
                  file=sys.stderr)
            return 1
        print(show(c))
        problems = file_problems(args.path, c)
        for p in problems:
            print(f"pearl-robot bundle: error: {p}", file=sys.stderr)
        if problems:
            print(f"pearl-robot bundle: this bundle would be refused ({len(problems)} "
                  f"problem{'s' if len(problems) > 1 else ''}); re-export it", file=sys.stderr)
            return 1
        return 0
    robot = _robot(args)
    bundle = load_bundle(args.path, robot)
    print(summary(args.path, bundle.contract))
    fit = ""
    if robot is not None:
        fit = ", robot fit (joint names" + (", limits, period" if robot.control_period else "") \
            + ")"
    print(f"check       OK: hashes, contract, graph shapes, golden vectors (max error "
          f"{bundle.golden_max_error:.1e}){fit}")
    if args.ticks > 0:
        med, p99 = timed_ticks(args.path, args.ticks)
        period_us = bundle.contract.control_period * 1e6
        print(f"timing      full control tick median {med:.0f} us, p99 {p99:.0f} us "
              f"({100 * p99 / period_us:.2f}% of the {period_us / 1e3:g} ms period)")
    return 0
