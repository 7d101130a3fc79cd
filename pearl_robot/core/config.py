"""Frozen, validated configuration for the PEARL algorithm and its meta-training loop.

One dataclass per concern, one docstring per field (the CLI help and the YAML files read from
these). Every value is checked in ``__post_init__`` and a bad one raises :class:`ConfigError`
naming the field, so a typo in a YAML file fails at load time, not two hours into a run.

Defaults are the reference implementation's (oyster ``configs/default.py``); per-family
overrides live in :data:`REFERENCE_PRESETS` and in ``config/train/*.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pearl_robot.errors import ConfigError

SacVariant = Literal["reference", "modern"]
ContextSampling = Literal["transitions", "trajectories"]
ContextLengths = Literal["fixed", "uniform"]
InferenceMode = Literal["pog", "pooled", "privileged"]
PolicyInput = Literal["sample", "belief"]
BeliefHead = Literal["mlp", "anchors", "information"]
TaskRelabeling = Literal["off", "mix", "family", "hindsight"]
BeliefRefinement = Literal["off", "particles"]


def _check(cond: bool, name: str, message: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{name} {message}, got {value!r}")


def _positive(obj: Any, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(isinstance(v, (int, float)) and v > 0 and math.isfinite(v),
               f"{type(obj).__name__}.{n}", "must be a finite number > 0", v)


def _non_negative(obj: Any, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(isinstance(v, (int, float)) and v >= 0 and math.isfinite(v),
               f"{type(obj).__name__}.{n}", "must be a finite number >= 0", v)


@dataclass(frozen=True)
class PearlConfig:
    """The learner: networks, posterior and SAC update (everything `core/` needs)."""

    latent_dim: int = 5
    """Size of the task variable z (5 in every reference config)."""
    hidden_sizes: tuple[int, ...] = (300, 300, 300)
    """Hidden layer widths of the actor, Q and V networks (reference: 300-300-300)."""
    encoder_hidden_sizes: tuple[int, ...] = (200, 200, 200)
    """Hidden layer widths of the per-transition context encoder (reference: 200-200-200)."""
    use_information_bottleneck: bool = True
    """True: probabilistic encoder, product-of-Gaussians posterior and KL to N(0, I).
    False: deterministic encoder, z = mean over transitions (the reference's IB-off option)."""
    kl_lambda: float = 0.1
    """Weight of the KL(q(z|c) || N(0, I)) term, summed over tasks and latent dims."""
    var_floor: float = 1e-7
    """Lower clamp on each per-transition variance softplus(raw) (reference: 1e-7)."""
    task_inference: bool = True
    """False fixes z = 0 for acting and learning (no task inference): the "same SAC without
    PEARL" baseline the benchmarks compare against. The encoder is then unused."""
    use_next_obs_in_context: bool = False
    """Context rows are (s, a, r, s') instead of (s, a, r); needed when dynamics vary."""
    sac_variant: SacVariant = "reference"
    """"reference": two Q + V + target V, fixed temperature (reward_scale is the inverse
    temperature). "modern": twin Q with twin target Q and a learned temperature."""
    discount: float = 0.99
    """Discount factor gamma."""
    reward_scale: float = 5.0
    """Multiplies rewards inside the Bellman target only (inverse entropy temperature)."""
    soft_target_tau: float = 0.005
    """Polyak rate of the target network update."""
    policy_lr: float = 3e-4
    """Adam learning rate of the actor."""
    qf_lr: float = 3e-4
    """Adam learning rate of the Q networks."""
    vf_lr: float = 3e-4
    """Adam learning rate of the V network ("reference" variant)."""
    context_lr: float = 3e-4
    """Adam learning rate of the context encoder."""
    alpha_lr: float = 3e-4
    """Adam learning rate of log(alpha) ("modern" variant)."""
    target_entropy: float | None = None
    """Entropy target of the learned temperature; None means -action_dim ("modern" only)."""
    policy_mean_reg: float = 1e-3
    """Weight of mean(mu^2) in the policy loss."""
    policy_std_reg: float = 1e-3
    """Weight of mean((log sigma)^2) in the policy loss (rlkit's ``policy_log_std**2``)."""
    meta_batch: int = 16
    """Tasks per gradient step, drawn with replacement from the training tasks."""
    batch_size: int = 256
    """RL transitions per task per gradient step."""
    embedding_batch_size: int = 64
    """Context transitions per task per gradient step (drawn from the encoder buffer)."""
    context_sampling: ContextSampling = "transitions"
    """How a training context is drawn from the encoder buffer. "transitions": independent
    uniform transitions (the reference). "trajectories": a window of consecutive whole
    trajectories from a random trajectory start (oyster's ``sequence=True`` sampling), so the
    encoder trains on contexts shaped like the online context it gets at evaluation."""

    inference: InferenceMode = "pog"
    """How z is inferred from context (``core.inference``). "pog": PEARL, per-transition
    Gaussian factors multiplied together, the encoder trained through the critic and the KL
    term (the faithful baseline; every reference preset). "pooled": per-transition features
    pooled by mean and max over the context (any order, any length up to the window) into a
    Gaussian belief head, trained by regression of the family's privileged task parameters
    (where a task has them; missing labels are masked) and by reconstruction of rewards from
    (s, a, s', z) (label-free, so it also trains on robot logs). "privileged": the policy is
    given the true (normalized) task parameters; a benchmark ceiling, not deployable."""
    policy_input: PolicyInput = "sample"
    """What the actor and critics see of the belief. "sample": z drawn from it (PEARL's
    posterior sampling; the reference). "belief": its mean and standard deviation
    concatenated (2 x latent_dim inputs), so the policy knows how sure the belief is."""
    feature_dim: int = 64
    """"pooled": width of the per-transition feature vector that is mean- and max-pooled."""
    belief_head: BeliefHead = "mlp"
    """"pooled": how pooled features become the belief. "mlp": an MLP on the features' mean
    and max and the context size. "anchors": the features are per-transition log-likelihood
    contributions over ``feature_dim`` learned anchor points in z space, summed over the
    context (a product of non-Gaussian factors: it can intersect what single transitions
    only constrain); the belief is the anchors' posterior mixture, moment-matched.
    "information": each row gives ``belief_rank`` learned linear measurements of z (a
    direction and a value) and the belief is their exact product with the N(0, I) prior in
    full covariance (``core.posterior.information_posterior``): a product of Gaussians like
    PEARL's, but its factors are not diagonal, so rows that each constrain z along one
    direction intersect (``feature_dim`` and ``head_hidden_sizes`` are unused there: the
    features are the factors)."""
    belief_rank: int = 1
    """"information" head: linear measurements of z that each context row contributes."""
    head_hidden_sizes: tuple[int, ...] = (64, 64)
    """"pooled": hidden widths of the belief head (pooled features -> belief mean, var)."""
    decoder_hidden_sizes: tuple[int, ...] = (64, 64)
    """"pooled": hidden widths of the reward decoder (s, a, s', z) -> r."""
    task_loss_weight: float = 1.0
    """"pooled": weight of the Gaussian negative log-likelihood of the task's privileged
    parameters under the belief (its first dims); 0 turns task supervision off."""
    reward_loss_weight: float = 1.0
    """"pooled": weight of the reward-reconstruction loss (z sampled from the belief); 0
    turns it off."""
    critic_trains_encoder: bool = True
    """The Bellman error backpropagates into the encoder (PEARL: true). "pooled" trains
    better with false: its own losses shape the belief, the critic sees it detached."""
    context_lengths: ContextLengths = "fixed"
    """Length of each training context. "fixed": embedding_batch_size rows (the reference).
    "uniform": a length drawn per task from 1..embedding_batch_size (rows beyond it masked),
    so the belief learns how sure to be after a few transitions as well as after many
    ("pooled" and "pog" both honour it)."""
    inference_updates: int = 1
    """"pooled": gradient steps of the belief (encoder, head, decoder) per actor-critic step;
    each extra one draws fresh contexts. The belief's losses are cheap next to the critics',
    so extra steps buy inference accuracy for little wall clock."""
    belief_window: int | None = None
    """"pooled": newest transitions the online belief keeps (the step graph's ring size);
    None: embedding_batch_size."""
    task_relabeling: TaskRelabeling = "off"
    """"pooled": in the belief-only steps (``inference_updates`` - 1 per step), score part of
    the training contexts under other tasks and train the belief on those. "off": never.
    "mix": a task whose labels are a random convex combination of two training tasks' labels
    (task interpolation, as MLTI densifies few training tasks). "family": a new task drawn from
    the family's task distribution (its sampler, never the held-out list). "hindsight": a
    goal where one of the context's own transitions ended (HER's achieved goal; goal-reaching
    families, ``TaskFamily.hindsight_labels``), so a sparse context holds rewards. The
    rewards are recomputed by the family's reward function (``TaskFamily.relabel_rewards``;
    families whose labels change the dynamics cannot), so the belief cannot memorize the
    training tasks and has to read the rewards rather than where the trajectories went. The
    actor-critic step always sees the real contexts."""
    relabel_fraction: float = 0.5
    """"pooled" with task_relabeling: fraction of each belief-only step's tasks relabelled."""
    refinement: BeliefRefinement = "off"
    """"pooled": test-time refinement of the belief after exploration (reference protocol).
    "off": the Gaussian belief head decides. "particles": ``num_particles`` fixed hypotheses
    of z (label dims drawn from the family's task distribution, free dims from N(0, 1)) are
    weighted by a learned likelihood of the context rewards (a context-reward decoder trained
    with z = the true labels), and z is sampled from the weighted particles. The weighted
    set can hold what a Gaussian cannot: "on the half-circle, except the arcs already
    visited", so posterior sampling does not return where a sparse reward said nothing. The
    actor-critic is then trained on particle-shaped z (the task's true labels where known),
    so the policy goes where a hypothesis says (needs policy_input "sample" and
    critic_trains_encoder false)."""
    num_particles: int = 512
    """"particles": hypotheses of z in the particle belief."""
    particle_reward_std: float = 0.1
    """"particles": standard deviation of the context reward around the decoder's prediction
    (the likelihood's noise); smaller excludes faster and tolerates decoder error less."""

    def __post_init__(self) -> None:
        _positive(self, "latent_dim", "meta_batch", "batch_size", "embedding_batch_size",
                  "feature_dim", "belief_rank", "inference_updates", "num_particles",
                  "particle_reward_std",
                  "reward_scale", "policy_lr", "qf_lr", "vf_lr", "context_lr", "alpha_lr",
                  "var_floor")
        _non_negative(self, "kl_lambda", "policy_mean_reg", "policy_std_reg",
                      "task_loss_weight", "reward_loss_weight")
        _check(self.inference in ("pog", "pooled", "privileged"), "PearlConfig.inference",
               "must be 'pog', 'pooled' or 'privileged'", self.inference)
        _check(self.policy_input in ("sample", "belief"), "PearlConfig.policy_input",
               "must be 'sample' or 'belief'", self.policy_input)
        _check(self.belief_head in ("mlp", "anchors", "information"),
               "PearlConfig.belief_head", "must be 'mlp', 'anchors' or 'information'",
               self.belief_head)
        _check(self.task_relabeling in ("off", "mix", "family", "hindsight"),
               "PearlConfig.task_relabeling", "must be 'off', 'mix', 'family' or 'hindsight'",
               self.task_relabeling)
        _check(isinstance(self.relabel_fraction, (int, float))
               and 0.0 < self.relabel_fraction <= 1.0, "PearlConfig.relabel_fraction",
               "must be in (0, 1]", self.relabel_fraction)
        _check(self.task_relabeling == "off" or (self.inference == "pooled"
                                                 and self.inference_updates >= 2),
               "PearlConfig.task_relabeling", "needs inference 'pooled' and "
               "inference_updates >= 2 (it acts in the belief-only steps)",
               self.task_relabeling)
        _check(self.refinement in ("off", "particles"), "PearlConfig.refinement",
               "must be 'off' or 'particles'", self.refinement)
        _check(self.refinement == "off" or (self.inference == "pooled"
                                            and self.policy_input == "sample"
                                            and not self.critic_trains_encoder),
               "PearlConfig.refinement", "'particles' needs inference 'pooled', policy_input "
               "'sample' and critic_trains_encoder false (the policy is conditioned on "
               "particle-shaped z, which no gradient connects to the belief)", self.refinement)
        _check(self.context_lengths in ("fixed", "uniform"), "PearlConfig.context_lengths",
               "must be 'fixed' or 'uniform'", self.context_lengths)
        _check(self.belief_window is None or (isinstance(self.belief_window, int)
                                              and self.belief_window > 0),
               "PearlConfig.belief_window", "must be a positive integer or null",
               self.belief_window)
        _check(self.inference == "pog" or self.use_information_bottleneck,
               "PearlConfig.use_information_bottleneck",
               "must be true unless inference is 'pog' (the other modes always hold a "
               "Gaussian belief)", self.use_information_bottleneck)
        _check(0.0 <= self.discount < 1.0, "PearlConfig.discount", "must be in [0, 1)",
               self.discount)
        _check(0.0 < self.soft_target_tau <= 1.0, "PearlConfig.soft_target_tau",
               "must be in (0, 1]", self.soft_target_tau)
        _check(self.sac_variant in ("reference", "modern"), "PearlConfig.sac_variant",
               "must be 'reference' or 'modern'", self.sac_variant)
        _check(self.context_sampling in ("transitions", "trajectories"),
               "PearlConfig.context_sampling", "must be 'transitions' or 'trajectories'",
               self.context_sampling)
        for n in ("hidden_sizes", "encoder_hidden_sizes", "head_hidden_sizes",
                  "decoder_hidden_sizes"):
            v = getattr(self, n)
            _check(len(v) > 0 and all(isinstance(h, int) and h > 0 for h in v),
                   f"PearlConfig.{n}", "must be a non-empty list of positive integers", v)


@dataclass(frozen=True)
class TrainConfig:
    """The meta-training loop: data collection phases, gradient steps, evaluation, output."""

    task_family: str = "point-robot"
    """Task family name (see `pearl_robot.tasks.registry.FAMILIES`)."""
    seed: int = 0
    """Seeds numpy, torch and the environments; the same seed reproduces the run."""
    num_iterations: int = 500
    """Meta-training iterations (collect, then train, then evaluate)."""
    num_initial_steps: int = 2000
    """Env steps per training task collected with z ~ prior before the first iteration."""
    num_tasks_sample: int = 5
    """Training tasks chosen (uniformly) for data collection each iteration."""
    num_steps_prior: int = 400
    """Per chosen task: env steps with z ~ prior, to the RL and encoder buffers."""
    num_steps_posterior: int = 0
    """Per chosen task: env steps with z ~ q(z|c), to the RL and encoder buffers."""
    num_extra_rl_steps_posterior: int = 400
    """Per chosen task: env steps with z ~ q(z|c), to the RL buffer only."""
    num_train_steps_per_itr: int = 2000
    """Gradient steps per iteration."""
    update_post_train: int = 1
    """During posterior collection, re-infer z every this many trajectories."""
    max_path_length: int = 200
    """Trajectory length cap (the env's own horizon is used when smaller)."""
    num_exp_traj_eval: int = 1
    """Evaluation: trajectories before the first posterior update (exploration with prior z)."""
    num_steps_per_eval: int = 600
    """Evaluation: env steps per task (trajectories = this / max_path_length)."""
    num_evals: int = 2
    """Evaluation: repeats per task (returns averaged)."""
    num_eval_train_tasks: int | None = None
    """Training tasks also evaluated each time (None: as many as held-out tasks)."""
    eval_every: int = 1
    """Evaluate every this many iterations (the last iteration is always evaluated)."""
    validation_tasks: int = 0
    """The last this many training tasks are never trained on: every evaluation scores them
    like the held-out tasks (``eval/val_*``) and the best score so far is kept as
    ``checkpoints/best.pt``. Picks the checkpoint by generalization without looking at the
    held-out tasks: the pooled belief's held-out score peaks and then declines as it fits the
    training tasks (docs/performance.md). 0: no validation, no best.pt."""
    checkpoint_every: int = 10
    """Write a resumable checkpoint every this many iterations (and at the end)."""
    replay_capacity: int = 100_000
    """Transitions kept per task in each buffer (float32 ring buffers)."""
    save_replay_buffers: bool = False
    """Put the replay buffers into checkpoints (exact resume of data, larger files)."""
    torch_threads: int = 1
    """torch.set_num_threads for training. 1 by default: the networks are small, and on a
    shared 2-core machine two OpenMP threads spun against other processes and training fell
    from 30-50 to 1-5 gradient steps/s (measured). Raise it on an idle many-core workstation."""
    device: str = "cpu"
    """Torch device for the networks ("cpu", "cuda")."""

    def __post_init__(self) -> None:
        _positive(self, "num_iterations", "num_tasks_sample", "update_post_train",
                  "max_path_length", "num_steps_per_eval", "num_evals", "eval_every",
                  "checkpoint_every", "replay_capacity", "torch_threads")
        _non_negative(self, "num_initial_steps", "num_steps_prior", "num_steps_posterior",
                      "num_extra_rl_steps_posterior", "num_train_steps_per_itr",
                      "num_exp_traj_eval", "validation_tasks")
        _check(isinstance(self.seed, int) and self.seed >= 0, "TrainConfig.seed",
               "must be an integer >= 0", self.seed)
        _check(self.num_steps_per_eval >= self.max_path_length, "TrainConfig.num_steps_per_eval",
               "must be at least one trajectory (max_path_length)", self.num_steps_per_eval)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run: the learner and the loop. This is what a training YAML file holds."""

    pearl: PearlConfig = field(default_factory=PearlConfig)
    """The learner (networks, posterior, SAC update)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The meta-training loop."""


# Reference hyperparameters (oyster configs/*.json over default.py). Keys are family names.
REFERENCE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "point-robot": {
        "pearl": dict(meta_batch=16, embedding_batch_size=64, reward_scale=100.0),
        "train": dict(num_initial_steps=200, num_tasks_sample=5, num_steps_prior=200,
                      num_steps_posterior=0, num_extra_rl_steps_posterior=200,
                      num_train_steps_per_itr=1000, num_exp_traj_eval=1,
                      num_steps_per_eval=60, num_evals=2, max_path_length=20),
    },
    "sparse-point-robot": {
        "pearl": dict(meta_batch=16, embedding_batch_size=1024, reward_scale=100.0,
                      discount=0.9, kl_lambda=1.0),
        "train": dict(num_initial_steps=200, num_tasks_sample=10, num_steps_prior=100,
                      num_steps_posterior=900, num_extra_rl_steps_posterior=0,
                      num_train_steps_per_itr=1000, num_exp_traj_eval=5,
                      num_steps_per_eval=400, num_evals=2, max_path_length=20),
    },
    "cheetah-vel": {
        "pearl": dict(meta_batch=16, embedding_batch_size=100),
        "train": dict(num_steps_prior=400, num_extra_rl_steps_posterior=600,
                      num_exp_traj_eval=2, num_evals=1),
    },
    "cheetah-dir": {
        "pearl": dict(meta_batch=4, embedding_batch_size=256),
        "train": dict(num_steps_prior=1000, num_extra_rl_steps_posterior=1000,
                      num_exp_traj_eval=2, num_evals=4),
    },
    "ant-dir": {
        "pearl": dict(meta_batch=4, embedding_batch_size=256),
        "train": dict(num_extra_rl_steps_posterior=600, num_train_steps_per_itr=4000,
                      num_exp_traj_eval=2, num_evals=4),
    },
    "ant-goal": {
        "pearl": dict(meta_batch=10, embedding_batch_size=256, kl_lambda=1.0),
        "train": dict(num_extra_rl_steps_posterior=600, num_train_steps_per_itr=4000,
                      num_exp_traj_eval=2, num_evals=1),
    },
    "humanoid-dir": {
        "pearl": dict(meta_batch=16, embedding_batch_size=256),
        "train": dict(num_extra_rl_steps_posterior=600, num_train_steps_per_itr=4000,
                      num_exp_traj_eval=2, num_evals=1),
    },
    "walker-rand-params": {
        "pearl": dict(meta_batch=10, embedding_batch_size=100, use_next_obs_in_context=True),
        "train": dict(num_extra_rl_steps_posterior=600, num_train_steps_per_itr=4000,
                      num_exp_traj_eval=2, num_evals=2),
    },
    "hopper-rand-params": {
        "pearl": dict(meta_batch=10, embedding_batch_size=100, use_next_obs_in_context=True),
        "train": dict(num_extra_rl_steps_posterior=600, num_train_steps_per_itr=4000,
                      num_exp_traj_eval=2, num_evals=2),
    },
}


def reference_config(family: str, **train_overrides: Any) -> ExperimentConfig:
    """The reference hyperparameters for a task family (ConfigError for an unknown one)."""
    if family not in REFERENCE_PRESETS:
        raise ConfigError(f"no reference preset for task family {family!r}; known: "
                          f"{', '.join(sorted(REFERENCE_PRESETS))}")
    preset = REFERENCE_PRESETS[family]
    return ExperimentConfig(
        pearl=PearlConfig(**preset["pearl"]),
        train=TrainConfig(task_family=family, **{**preset["train"], **train_overrides}),
    )


# ---------------------------------------------------------------------------------------------
# dict / YAML conversion with field-naming errors


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item_t = args[0] if args else Any
        return tuple(_coerce(v, item_t, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict; unknown keys and bad types name the field."""
    name = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown field(s) {unknown}; known: {sorted(known)}")
    kwargs = {k: _coerce(v, hints[k], f"{name}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (lists, not tuples) for YAML, JSON and `weights_only` checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def load_experiment(path: str | Path, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Read an experiment YAML file. Missing sections/fields keep ``base`` (or the
    reference preset of the file's task family, or the plain defaults)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a mapping with 'pearl' and 'train'")
    unknown = sorted(set(raw) - {"pearl", "train", "preset"})
    if unknown:
        raise ConfigError(f"{p}: unknown section(s) {unknown}; known: pearl, train, preset")
    if base is None:
        preset = raw.get("preset")
        base = reference_config(preset) if preset else ExperimentConfig()
    return merge(base, {"pearl": raw.get("pearl") or {}, "train": raw.get("train") or {}},
                 where=str(p))


def merge(base: ExperimentConfig, overrides: dict[str, dict[str, Any]],
          where: str = "overrides") -> ExperimentConfig:
    """A copy of ``base`` with ``{"pearl": {...}, "train": {...}}`` applied and validated."""
    pearl = from_dict(PearlConfig, {**to_dict(base.pearl), **overrides.get("pearl", {})},
                      f"{where}: pearl")
    train = from_dict(TrainConfig, {**to_dict(base.train), **overrides.get("train", {})},
                      f"{where}: train")
    return ExperimentConfig(pearl=pearl, train=train)
