"""Meta-train PEARL in simulation and/or retrain from logged robot datasets.

Examples:
  pearl-robot train --family point-robot --out runs/point
  pearl-robot train --config config/train/point_robot_fast.yaml --iterations 40
  pearl-robot train --resume runs/point/checkpoints/latest.pt --iterations 80
  pearl-robot train --config config/train/twin_arm.yaml --set pearl.kl_lambda=0.3
  pearl-robot train --data /data/night1 /data/night2 --init runs/twin/checkpoints/latest.pt
  pearl-robot train ... --export-bundle runs/point/bundle
  pearl-robot train ... --export-bundle runs/point/bundle --with-checkpoint
  pearl-robot train --data /data/night1 --init /opt/models/arm3/checkpoint.pt
  pearl-robot train --config config/train/point_robot_fast.yaml --ray --workers 2
  pearl-robot train --config config/train/twin_arm.yaml --ray auto --workers 8 --max-staleness 1
  pearl-robot train --data /data/robot1 /data/robot2 --sim --follow --ray auto --workers 4

A run directory holds config.yaml, progress.csv (one row per iteration), tensorboard/,
learning_curve.png and checkpoints/latest.pt (resumable; loads with weights_only=True).
Hyperparameters start from the reference preset of the task family (oyster's configs), then the
--config file, then each --set KEY=VALUE (YAML value syntax).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pearl_robot.core.config import (
    REFERENCE_PRESETS,
    ExperimentConfig,
    load_experiment,
    merge,
    reference_config,
)
from pearl_robot.errors import ConfigError, PearlRobotError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", help="task family (default: the config's, else point-robot); "
                   "see `pearl_robot.tasks.registry`")
    p.add_argument("--config", type=Path, help="experiment YAML (sections: preset, pearl, train)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. pearl.latent_dim=8 or train.seed=3")
    p.add_argument("--iterations", type=int, help="shortcut for --set train.num_iterations=N")
    p.add_argument("--seed", type=int, help="shortcut for --set train.seed=N")
    p.add_argument("--out", type=Path, help="run directory (default runs/<family>-<time>)")
    p.add_argument("--resume", type=Path, metavar="CHECKPOINT",
                   help="continue a run from its checkpoint (same config unless overridden; "
                   "--iterations raises the total). Restores networks, optimizers, counters "
                   "and RNG states; the replay buffers only when the run saved them "
                   "(train.save_replay_buffers: true, off in the shipped configs: otherwise "
                   "the initial data is re-collected and the continuation is not bit-exact)")
    p.add_argument("--init", type=Path, metavar="CHECKPOINT",
                   help="warm-start the networks from a checkpoint (optimizers and counters "
                   "start fresh), e.g. to retrain from logs; without --config the family, "
                   "sizes and hyperparameters are the checkpoint's")
    p.add_argument("--data", type=Path, nargs="+", metavar="DIR",
                   help="logged dataset directories to train from (see docs/dataset-format.md); "
                   "without --config, --init or --family the family is the one the logs "
                   "name and the settings its config/train/ file")
    p.add_argument("--sim", action="store_true",
                   help="with --data: also collect in the simulated task family")
    p.add_argument("--sim-tasks", type=int, metavar="N",
                   help="with --data: simulate only the family's first N training tasks "
                   "(implies --sim); fewer twin tasks, less sim data mixed with the logs")
    p.add_argument("--follow", action="store_true",
                   help="with --data: keep training and pick up each newly closed episode, "
                   "until --iterations in total (set it large to follow all night) or Ctrl-C; "
                   "the newest checkpoint is always on disk")
    p.add_argument("--export-bundle", type=Path, metavar="DIR",
                   help="export a model bundle from the final checkpoint (parity-checked); "
                        "with train.validation_tasks, from checkpoints/best.pt")
    p.add_argument("--with-checkpoint", action="store_true",
                   help="with --export-bundle: embed a weights-only copy of the checkpoint in "
                   "the bundle (checkpoint.pt), so the next retrain can --init from it")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda")
    dist = p.add_argument_group(
        "distributed (Ray; needs the `distributed` install extra)",
        "Collection runs on Ray rollout workers; this process stays the learner (buffers, "
        "updates, evaluation, checkpoints). See docs/architecture.md.")
    dist.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                      help="train with Ray rollout workers: no ADDRESS starts a local cluster, "
                      "`auto` joins the one started with `ray start --head`, HOST:PORT a "
                      "remote head")
    dist.add_argument("--workers", type=int, metavar="N",
                      help="with --ray: rollout worker actors (default 2)")
    dist.add_argument("--max-staleness", type=int, metavar="K",
                      help="with --ray: 0 collects synchronously in the reference order "
                      "(default); K >= 1 lets workers collect up to K iterations ahead with "
                      "weights at most K versions old")
    dist.add_argument("--worker-cpus", type=float, metavar="C",
                      help="with --ray: Ray CPUs reserved per worker (default 1)")
    dist.add_argument("--job-timeout", type=float, metavar="S",
                      help="with --ray: a rollout job running longer counts as a dead worker "
                      "(replaced, job re-run); default no limit")
    dist.add_argument("--data-node", metavar="IP",
                      help="with --ray --data: read the datasets on this cluster node (the "
                      "machine the robots log to)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-tensorboard", action="store_true", help="CSV metrics only")


def _parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"pearl": {}, "train": {}}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        section, _, field = key.partition(".")
        if section not in out or not field:
            raise ConfigError(f"--set key must be pearl.<field> or train.<field>, got {key!r}")
        try:
            out[section][field] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from exc
    return out


def resolve_config(args: argparse.Namespace, base: ExperimentConfig | None = None
                   ) -> ExperimentConfig:
    """Preset -> config file -> --set/--iterations/--seed/--family/--device."""
    if base is None:
        family = args.family
        if args.config is not None:
            cfg = load_experiment(args.config)
            if family and family != cfg.train.task_family:
                cfg = merge(cfg, {"train": {"task_family": family}})
        else:
            family = family or "point-robot"
            cfg = reference_config(family) if family in REFERENCE_PRESETS else \
                merge(ExperimentConfig(), {"train": {"task_family": family}})
    else:
        cfg = base
    ov = _parse_overrides(args.overrides)
    if args.iterations is not None:
        ov["train"]["num_iterations"] = args.iterations
    if args.seed is not None:
        ov["train"]["seed"] = args.seed
    if args.device:
        ov["train"]["device"] = args.device
    return merge(cfg, ov, where="command line")


def _config_from_init(args: argparse.Namespace) -> ExperimentConfig | None:
    """Without --config, a warm start takes family, network sizes and hyperparameters from
    the --init checkpoint (the networks must match it anyway; the point-robot default would
    fail on twin logs), and says so. None when --config decides (or there is no --init)."""
    if args.init is None or args.config is not None:
        return None
    from pearl_robot.core.checkpoint import load_checkpoint

    base = load_checkpoint(args.init).config
    if args.family and args.family != base.train.task_family:
        raise ConfigError(f"--family {args.family} differs from the --init checkpoint's family "
                          f"{base.train.task_family!r}; its networks cannot drive another "
                          f"family (pass --config to start from another config)")
    p = base.pearl
    print(f"config: from --init {args.init} (family {base.train.task_family}, latent "
          f"{p.latent_dim}, actor/critic {list(p.hidden_sizes)}, encoder "
          f"{list(p.encoder_hidden_sizes)}, {base.train.num_iterations} iterations); "
          f"--config FILE or --set KEY=VALUE to change it")
    return base


def families_in_data(dirs: list[Path]) -> set[str]:
    """Task families the datasets' manifests name (each closed episode's task metadata)."""
    from pearl_robot.datalog.reader import manifest_entries

    found: set[str] = set()
    for d in dirs:
        try:
            entries = manifest_entries(d)
        except (OSError, PearlRobotError):
            continue  # the loader says what is wrong with the directory, in its own words
        for e in entries:
            task = e.get("task")
            if isinstance(task, dict) and isinstance(task.get("family"), str):
                found.add(task["family"])
    return found


def shipped_config(family: str) -> Path | None:
    """The training config shipped for a family (``config/train/<family>.yaml`` with ``_``
    for ``-``) in a source checkout, or None."""
    path = Path(__file__).resolve().parents[2] / "config" / "train" / \
        f"{family.replace('-', '_')}.yaml"
    return path if path.is_file() else None


def _config_from_data(args: argparse.Namespace) -> ExperimentConfig | None:
    """Retraining from logs with neither --config, --init nor --family: the family is the
    one the datasets' task metadata names, the settings its shipped config (else its
    reference preset), and the CLI says so. None when something else decides."""
    if not args.data or args.config is not None or args.init is not None or args.family:
        return None
    families = families_in_data(list(args.data))
    if len(families) > 1:
        names = ", ".join(sorted(families))
        raise ConfigError(f"the datasets hold tasks of several families ({names}); pass "
                          "--family, --config or --init")
    if not families:
        return None
    family = families.pop()
    path = shipped_config(family)
    if path is not None and load_experiment(path).train.task_family == family:
        cfg, source = load_experiment(path), str(path)
    elif family in REFERENCE_PRESETS:
        cfg, source = reference_config(family), "its reference preset"
    else:
        cfg = merge(ExperimentConfig(), {"train": {"task_family": family}})
        source = "the default settings"
    print(f"config: family {family} from the datasets' task metadata, settings from {source}; "
          "--config FILE, --init CKPT or --family to change it")
    return cfg


def is_weights_only(trainer: dict[str, Any]) -> bool:
    """Whether a checkpoint's ``trainer`` entry is a weights-only copy's (``export
    --with-checkpoint``; marked by the exporter, and lacking the RNG states a resume needs)."""
    return bool(trainer.get("weights_only")) or "numpy_rng" not in trainer


def _remove_if_nothing_kept(out: Path) -> bool:
    """A run directory this run created, left with nothing a user could use (no checkpoint,
    no progress row) by a failure or an early Ctrl-C, is removed, so ``runs/`` holds runs.
    Returns whether it was removed."""
    if not out.is_dir() or any(out.rglob("*.pt")):
        return False
    progress = out / "progress.csv"
    if progress.is_file() and len(progress.read_text().splitlines()) > 1:
        return False
    shutil.rmtree(out, ignore_errors=True)
    return True


def run(args: argparse.Namespace) -> int:
    run_dir: list[tuple[Path, bool]] = []  # (the run directory, whether this run made it)
    try:
        return _run(args, run_dir)
    except BaseException:
        if run_dir and run_dir[0][1] and _remove_if_nothing_kept(run_dir[0][0]):
            print(f"removed {run_dir[0][0]}: the run stopped before writing a checkpoint or "
                  "a progress row", file=sys.stderr)
        raise


def _run(args: argparse.Namespace, run_dir: list[tuple[Path, bool]]) -> int:
    from pearl_robot.core.checkpoint import load_checkpoint
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.trainer import MetaTrainer

    if args.with_checkpoint and args.export_bundle is None:
        raise ConfigError("--with-checkpoint embeds the checkpoint in the exported bundle and "
                          "needs --export-bundle DIR")
    if args.resume is not None:
        ckpt = load_checkpoint(args.resume)
        if is_weights_only(ckpt.trainer):
            raise ConfigError(f"{args.resume} is a weights-only checkpoint (a bundle's "
                              "checkpoint.pt: no optimizer, RNG or replay state to resume); "
                              "warm-start from it with --init instead")
        cfg = resolve_config(args, ckpt.config)
        out = args.out or args.resume.parent.parent
    else:
        cfg = resolve_config(args, _config_from_init(args) or _config_from_data(args))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = args.out or Path("runs") / f"{cfg.train.task_family}-{stamp}"
    run_dir.append((Path(out), not Path(out).exists()))
    family = make_family(cfg.train.task_family)
    progress = not args.no_progress
    if not args.data and (args.sim or args.sim_tasks is not None or args.follow):
        raise ConfigError("--sim, --sim-tasks and --follow apply to training from logged "
                          "data and need --data DIR (without --data, training is in "
                          "simulation anyway)")
    given = [f for f in ("workers", "max_staleness", "worker_cpus", "job_timeout", "data_node")
             if getattr(args, f) is not None]
    if args.ray is None and given:
        raise ConfigError(f"--{given[0].replace('_', '-')} applies to distributed training "
                          "and needs --ray (without it, training runs in one process)")
    if args.ray is not None:
        from pearl_robot.train import distributed

        trainer = distributed.train(
            cfg, family, out, distributed.config_from_args(args), data=args.data,
            sim=args.sim, sim_tasks=args.sim_tasks, follow=args.follow, init=args.init,
            resume=args.resume, tensorboard=not args.no_tensorboard, progress=progress)
    elif args.data:
        try:
            from pearl_robot.train import offline
        except ImportError as exc:
            raise ConfigError("training from logged data (--data) is not available in this "
                              f"build: {exc}") from exc
        trainer = offline.make_trainer(cfg, family, out, args.data, sim=args.sim,
                                       sim_tasks=args.sim_tasks, init=args.init,
                                       tensorboard=not args.no_tensorboard, progress=progress)
        if args.follow:
            offline.follow(trainer, args.data)
        else:
            trainer.run()
    else:
        trainer = MetaTrainer(cfg, family, out, tensorboard=not args.no_tensorboard,
                              progress=progress)
        if args.resume is not None:
            trainer.load_state(args.resume)
        elif args.init is not None:
            trainer.load_state(args.init, weights_only_init=True)
        trainer.run()
    final = trainer.save(Path(out) / "checkpoints" / "final.pt")
    ev = trainer.last_eval
    print(f"run directory: {out}")
    print(f"checkpoint:    {final}")
    if ev:
        print(f"held-out return after adaptation: {ev['eval/test_final_return']:.3f} "
              f"(first trajectory: {ev['eval/test_first_return']:.3f})")
    best = Path(out) / "checkpoints" / "best.pt"
    if trainer.val_tasks and best.is_file():
        # train.validation_tasks: ship the checkpoint the validation tasks picked, not the last
        print(f"best on the {len(trainer.val_tasks)} validation tasks: {best} "
              f"(score {trainer.best_val:.3f}); exported instead of the final checkpoint")
        final = best
    if args.export_bundle is not None:
        from pearl_robot.export import cli as export_cli

        parser = argparse.ArgumentParser()
        export_cli.add_arguments(parser)
        extra = [f"--recorded={d}" for d in (args.data or [])]
        extra += ["--with-checkpoint"] if args.with_checkpoint else []
        return export_cli.run(parser.parse_args([str(final), str(args.export_bundle), *extra]))
    return 0
