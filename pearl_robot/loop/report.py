"""The loop's report: one self-contained HTML page (PNGs embedded, also saved beside it).

What it shows, from what the run left on disk (``loop.json``, the robot's episode log,
``diagnostics.jsonl``):

- **returns**: per held-out task, return per episode before the swap (shipped bundle), after
  it (retrained bundle) and in the confirmation block (the model the canary kept), with the
  zero-effort and oracle returns of the same tasks as reference lines. The references are
  simulated in the twin with the robot's physics, from each logged episode's own start pose
  (the serial robot has no reset routine: an episode starts where the last one left the arm);
- **belief**: posterior mean +- one standard deviation of every latent dimension over the
  robot's ticks, episode boundaries thin, task boundaries thick, the swap in red;
- **filmstrip**: the twin (robot physics, first held-out task) on the exploration episode
  (z from the prior) and on the last adapted episode, for both bundles (offscreen MuJoCo);
- **timing**: histograms of the tick interval and state -> command latency (stamps in the
  robot's log) and of the serial link's round trip (the bridge's /diagnostics), the 50 ms
  control period marked;
- **link, logger and loop statistics**: the last /diagnostics status of each node;
- **summary**: stage wall times, before/after means per task with the spread across tasks,
  the canary's verdict, the night's counts, the retrain's own evaluation in simulation.

``screenshot()`` checks the page in a real browser (headless Chromium, when installed).
"""

from __future__ import annotations

import base64
import html
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


class ReportFiles(NamedTuple):
    html: Path
    pngs: tuple[Path, ...]
    summary: dict[str, Any]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- data

def _robot_episodes(dataset: Path) -> dict[int, dict[str, np.ndarray]]:
    """Episode id -> arrays (obs, action, reward, stamps, belief) of the robot's log."""
    from pearl_robot.datalog.reader import load_datasets

    loaded = load_datasets([dataset])
    by_uid = {e.uid: e for e in loaded.episodes}
    out: dict[int, dict[str, np.ndarray]] = {}
    for td in loaded.tasks.values():
        for uid in np.unique(td.episode):
            rows = td.episode == uid
            order = np.argsort(td.step[rows], kind="stable")
            out[by_uid[int(uid)].episode] = {
                "obs": td.obs[rows][order], "action": td.action[rows][order],
                "reward": td.reward[rows][order], "stamps": td.stamps[rows][order],
                "belief": td.belief[rows][order]}
    return out


def baselines(family: Any, robot_params: dict[str, Any], task_index: int,
              start_qpos: np.ndarray, steps: int, seed: int) -> tuple[float, float]:
    """(zero-effort, oracle) returns of one task from one start pose, in the twin with the
    robot's physics."""
    from pearl_robot.tasks.base import Task

    goal = family.tasks[task_index].params["goal_qpos"]
    env = family.make_env(seed=seed)
    env.set_task(Task(task_index, {"goal_qpos": goal, **robot_params}))
    rets = []
    for policy in ("zero", "oracle"):
        rets.append(_reference_return(env, env.reset_to(start_qpos, seed=seed), steps, policy))
    env.close()
    return rets[0], rets[1]


def _reference_return(env: Any, obs: np.ndarray, steps: int, policy: str) -> float:
    """Return of ``steps`` steps from ``obs`` with zero effort or the env's oracle."""
    total = 0.0
    for _ in range(steps):
        a = np.zeros(env.action_dim) if policy == "zero" else env.oracle_action(obs)
        st = env.step(a)
        obs, total = st.obs, total + st.reward
    return total


REWARD_IN_WORDS = {
    "twin-arm": "per step: minus the joint distance to the goal (rad), plus up to 1 within "
                "about 0.1 rad of it, minus a small effort cost",
}
"""What one step's reward is, for the families a user meets first (tasks/ has the formula)."""


def return_meaning(family_name: str, steps: int | None = None) -> str:
    """One line under a returns plot: what "return" adds up, and which way is better."""
    span = f"the {steps} steps of an episode" if steps else "an episode"
    words = REWARD_IN_WORDS.get(family_name)
    return (f"return = sum of the rewards over {span}"
            + (f" ({words})" if words else "") + "; higher is better")


def reference_returns(family: Any, task_index: int, steps: int,
                      seeds: tuple[int, ...] = (0, 1, 2)) -> tuple[float, float] | None:
    """(zero-effort, oracle) returns of one task, mean over the twin's reset poses of
    ``seeds``; None when the family has no oracle to compare with."""
    env = family.make_env(seed=seeds[0])
    if not hasattr(env, "oracle_action"):
        env.close()
        return None
    env.set_task(family.tasks[task_index])
    rets: dict[str, list[float]] = {"zero": [], "oracle": []}
    for policy, out in rets.items():
        for seed in seeds:
            out.append(_reference_return(env, env.reset(seed=seed)[0], steps, policy))
    env.close()
    return float(np.mean(rets["zero"])), float(np.mean(rets["oracle"]))


# --------------------------------------------------------------------------- figures

def plot_returns(rows: list[dict[str, Any]], refs: dict[int, tuple[float, float]],
                 path: Path, ept: int, meaning: str = "", swapped: bool = True) -> Path:
    """Return per episode on each held-out task, before and after the swap, with the task's
    zero-effort and oracle returns as reference lines; ``meaning`` (see
    :func:`return_meaning`) says under the plot what a return is; ``swapped`` False: the node
    refused the retrained bundle, so the after block ran the shipped model again."""
    plt = _plt()
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(8.0, 3.2 * len(tasks) + 0.6), 3.8),
                             squeeze=False, sharey=True)
    style = {"before": ("o-", "tab:blue", "shipped (before)"),
             "after": ("s-", "tab:orange", "retrained (after swap)" if swapped else
                       "shipped again (swap refused)"),
             "confirm": ("^:", "tab:green", "confirmation (model kept)")}
    for ax, task in zip(axes[0], tasks, strict=True):
        for phase, (fmt, color, label) in style.items():
            pts = [(r["trial"] + 1, r["return"]) for r in rows
                   if r["task"] == task and r["phase"] == phase]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, fmt, color=color, label=label, ms=6)
        if task in refs:
            zero, oracle = refs[task]
            ax.axhline(zero, color="grey", ls="--", lw=1, label="zero effort")
            ax.axhline(oracle, color="black", ls="-.", lw=1, label="oracle (told the task)")
        ax.set_title(f"held-out task {task}")
        ax.set_xticks(range(1, ept + 1))
        ax.set_xlabel("episode on the task (1 = explore)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("return (robot, serial link)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.09 if meaning else 0.0))
    if meaning:
        import textwrap

        fig.text(0.5, 0.01, "\n".join(textwrap.wrap(meaning, int(fig.get_figwidth() * 14))),
                 ha="center", va="bottom", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.24 if meaning else 0.14, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_belief(rows: list[dict[str, Any]], eps: dict[int, dict[str, np.ndarray]],
                path: Path, latent_dim: int, control_period: float) -> Path | None:
    plt = _plt()
    seq = [r for r in rows if r["episode"] in eps]
    if not seq:
        return None
    means, stds, marks, swaps = [], [], [], []
    t = 0
    prev_task, prev_sha = None, None
    for r in seq:
        b = eps[r["episode"]]["belief"]
        means.append(b[:, :latent_dim])
        stds.append(np.sqrt(np.maximum(b[:, latent_dim:2 * latent_dim], 0.0)))
        marks.append((t, r["task"] != prev_task, r["task"]))
        if prev_sha is not None and r["model_sha"] != prev_sha:
            swaps.append(t)
        prev_task, prev_sha = r["task"], r["model_sha"]
        t += len(b)
    mean, std = np.concatenate(means), np.concatenate(stds)
    x = np.arange(len(mean)) * control_period
    fig, axes = plt.subplots(latent_dim, 1, figsize=(11, 1.15 * latent_dim + 0.8),
                             sharex=True, squeeze=False)
    for d in range(latent_dim):
        ax = axes[d][0]
        ax.plot(x, mean[:, d], lw=1, color="tab:blue")
        ax.fill_between(x, mean[:, d] - std[:, d], mean[:, d] + std[:, d], alpha=0.25,
                        color="tab:blue", lw=0)
        for t0, new_task, _ in marks:
            ax.axvline(t0 * control_period, color="black" if new_task else "grey",
                       lw=1.4 if new_task else 0.5, alpha=0.8 if new_task else 0.5)
        for s in swaps:
            ax.axvline(s * control_period, color="red", lw=2)
        ax.set_ylabel(f"z[{d}]", fontsize=8)
        ax.tick_params(labelsize=7)
    top = axes[0][0]
    for t0, new_task, task in marks:
        if new_task:
            top.text(t0 * control_period, 1.02, f"task {task}",
                     transform=top.get_xaxis_transform(), fontsize=7)
    axes[-1][0].set_xlabel("robot time in episodes (s): thin = episode start, thick = task "
                           "start, red = bundle swapped")
    fig.suptitle("belief: posterior mean +- 1 std per latent dimension", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_timing(eps: dict[int, dict[str, np.ndarray]], rtt_ms: list[float], path: Path,
                control_period: float) -> tuple[Path, dict[str, float]]:
    plt = _plt()
    intervals, latency = [], []
    for e in eps.values():
        st = e["stamps"]
        if len(st) > 1:
            intervals.append(np.diff(st[:, 1]))
        latency.append(st[:, 1] - st[:, 0])
    iv = np.concatenate(intervals) * 1e3 if intervals else np.zeros(0)
    lat = np.concatenate(latency) * 1e3 if latency else np.zeros(0)
    rtt = np.asarray(rtt_ms, dtype=float)
    rtt = rtt[np.isfinite(rtt) & (rtt > 0)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, data, title in ((axes[0], iv, "tick interval (ms)"),
                            (axes[1], lat, "state stamp -> command (ms)"),
                            (axes[2], rtt, "link round trip (ms), 1 sample/s")):
        if data.size:
            ax.hist(data, bins=40, color="tab:blue", alpha=0.8)
            ax.set_yscale("log")
        ax.axvline(control_period * 1e3, color="red", ls="--", lw=1.2,
                   label=f"{control_period * 1e3:g} ms period")
        ax.set_title(f"{title}, n={data.size}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

    def pct(a: np.ndarray, q: float) -> float:
        return float(np.percentile(a, q)) if a.size else math.nan

    # The mean is the control rate. The median is not: the policy ticks on the first device
    # state of each period, so with a 100 Hz state stream most intervals are a little over
    # the period (52.6 ms seen) and one in a few is short (about 42 ms).
    stats = {"tick_interval_mean_ms": float(iv.mean()) if iv.size else math.nan,
             "tick_interval_p50_ms": pct(iv, 50), "tick_interval_p99_ms": pct(iv, 99),
             "tick_interval_max_ms": float(iv.max()) if iv.size else math.nan,
             "state_to_command_p50_ms": pct(lat, 50), "state_to_command_p99_ms": pct(lat, 99),
             "link_rtt_p50_ms": pct(rtt, 50), "link_rtt_p99_ms": pct(rtt, 99),
             "ticks": int(iv.size + len(intervals))}
    return path, stats


def filmstrip(family: Any, bundles: list[tuple[str, Path]], robot_params: dict[str, Any],
              task_index: int, ept: int, path: Path, seed: int, control_period: float
              ) -> Path | None:
    """Frames of the exploration episode and of the last adapted one, per bundle."""
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig
    from pearl_robot.tasks.base import Task
    from pearl_robot.twin.render import record_episode, save_image_strip

    frames, labels = [], []
    task = Task(task_index, {"goal_qpos": family.tasks[task_index].params["goal_qpos"],
                             **robot_params})
    for name, bundle in bundles:
        rt = PolicyRuntime(bundle, RuntimeConfig(), rng=np.random.default_rng(seed))
        env = family.make_env(seed=seed)
        env.set_task(task)
        for k in range(ept):
            rt.begin_episode(task=task_index)
            state: dict[str, Any] = {"prev": None}

            def policy(obs: np.ndarray, rt: Any = rt, state: dict = state) -> np.ndarray:
                reward = None
                if state["prev"] is not None:
                    po, pa = state["prev"]
                    reward = family.transition_reward(task, po, pa, obs)[1]
                cmd = rt.tick(obs, reward, obs_age=0.0).command
                state["prev"] = (obs.copy(), cmd.copy())
                return cmd

            render = k in (0, ept - 1)
            ep = record_episode(env, policy, seed=seed + k, frame_every=12 if render else 0,
                                width=240, height=180)
            rt.end_episode()
            if render:
                tag = "explore (prior z)" if k == 0 else f"adapted (episode {k + 1})"
                for f, s in zip(ep.frames, ep.frame_steps, strict=True):
                    frames.append(f)
                    labels.append(f"{name}: {tag}, t={s * control_period:.1f}s, "
                                  f"R={float(np.sum(ep.rewards)):.0f}")
        env.close()
        rt.close()
    if not frames:
        return None
    per_row = len(frames) // (2 * len(bundles))
    return save_image_strip(frames, path, columns=per_row, labels=labels)


# --------------------------------------------------------------------------- summary

def repeat_noise(rows: list[dict[str, Any]]) -> float:
    """Mean |return difference| between the confirmation block and the earlier episodes of
    the same model on the same (task, trial): the run-to-run noise of one episode on the
    robot, measured in the same run."""
    diffs = []
    for c in (r for r in rows if r["phase"] == "confirm"):
        same = [r["return"] for r in rows if r["phase"] != "confirm" and r["task"] == c["task"]
                and r["trial"] == c["trial"] and r["model_sha"] == c["model_sha"]]
        diffs += [abs(c["return"] - x) for x in same]
    return float(np.mean(diffs)) if diffs else math.nan


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Before/after means per task, the mean difference and its spread across tasks."""
    per_task: dict[int, dict[str, float]] = {}
    for task in sorted({r["task"] for r in rows}):
        b = [r["return"] for r in rows if r["task"] == task and r["phase"] == "before"]
        a = [r["return"] for r in rows if r["task"] == task and r["phase"] == "after"]
        if b and a:
            per_task[task] = {"before": float(np.mean(b)), "after": float(np.mean(a)),
                              "delta": float(np.mean(a) - np.mean(b))}
    deltas = np.array([v["delta"] for v in per_task.values()])
    before = np.array([v["before"] for v in per_task.values()])
    noise = repeat_noise(rows)
    n_b = sum(r["phase"] == "before" and r["task"] in per_task for r in rows)
    n_a = sum(r["phase"] == "after" and r["task"] in per_task for r in rows)
    # one episode's noise sigma from the mean |difference| of two episodes (E|d| = 2 sigma /
    # sqrt(pi) for Gaussian noise), then the standard error of a difference of two means
    sigma = noise * math.sqrt(math.pi) / 2.0
    delta_se = sigma * math.sqrt(1.0 / n_a + 1.0 / n_b) if n_a and n_b else math.nan
    return {"per_task": per_task,
            "before_mean": float(before.mean()) if before.size else math.nan,
            "after_mean": float(np.mean([v["after"] for v in per_task.values()]))
            if per_task else math.nan,
            "delta_mean": float(deltas.mean()) if deltas.size else math.nan,
            "delta_std_across_tasks": float(deltas.std(ddof=1)) if deltas.size > 1 else math.nan,
            "delta_relative": float(deltas.mean() / np.abs(before).mean())
            if deltas.size else math.nan,
            "tasks_better": int((deltas >= 0).sum()), "tasks": int(deltas.size),
            "repeat_noise": noise, "delta_se": delta_se}


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return f"<p><em>{html.escape(alt)}: not available</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[list[Any]], head: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if not math.isfinite(v) else f"{v:.3f}"
        return html.escape(str(v))

    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    return "\n".join(out) + "</table>"


def _canary_html(canary: dict[str, Any] | None, result: dict[str, Any]) -> str:
    if not canary:
        return ("<p><em>no canary verdict recorded in the robot's manifest (canary disabled, or "
                "the after-swap episodes did not finish)</em></p>")
    rows = [["decision", canary["decision"]],
            ["judged bundle", str(canary["new_sha256"])[:16]],
            ["compared with", str(canary["old_sha256"])[:16]],
            ["new model, mean return", canary.get("new_mean") or math.nan],
            ["old model, mean return (same task, trial)", canary.get("old_mean") or math.nan],
            ["difference", canary.get("delta") or math.nan],
            ["allowed drop", canary["threshold"]],
            ["episodes judged / unjudged", f"{len(canary.get('judged', []))} / "
                                           f"{canary.get('unjudged', 0)}"],
            ["model the robot kept (confirmation block)", result.get("kept_model", "?")]]
    return _table(rows, ["canary", "value"])


def _last_status(diags: list[dict[str, Any]], contains: str) -> dict[str, Any] | None:
    for d in reversed(diags):
        if contains in d["name"]:
            return d
    return None


IGNORED_COMMANDS_TOLERANCE = 0.01
"""A measured phase compares models only while at most this fraction of its commands reached
a disarmed device (one late tick costs one command: the bridge disarms 75 ms after the last
command and re-arms with the next; a device left disarmed ignores them all)."""


def swap_refused(swap: dict[str, Any] | None) -> bool:
    """The node's provenance guard refused the retrained bundle (``loop.json``'s ``swap``):
    the after block then ran the shipped model again."""
    return bool(swap) and swap.get("guard") == "refused"


def _guard_text(swap: dict[str, Any] | None) -> str:
    if not swap:
        return "not recorded"
    say = {"passed": "passed, the node validated and swapped the bundle",
           "refused": "refused, the shipped model stayed",
           "overridden": "refused, then overridden (swap_override) so the canary judges it"}
    text = say.get(str(swap.get("guard")), str(swap.get("guard")))
    return text + (f" ({swap['reason']})" if swap.get("reason") else "")


def ignored_phases(ignored: dict[str, Any] | None) -> dict[str, tuple[int, int]]:
    """Phases whose commands the device ignored beyond the tolerance: name -> (ignored,
    ticks). ``ignored`` maps phase -> (ignored, ticks) as ``loop.json`` stores it."""
    bad = {}
    for phase, (n, ticks) in (ignored or {}).items():
        if n > IGNORED_COMMANDS_TOLERANCE * max(ticks, 1):
            bad[phase] = (n, ticks)
    return bad


def verdict_text(cmp: dict[str, Any], canary: dict[str, Any] | None, kept: str,
                 warm: bool, ignored: dict[str, Any] | None = None,
                 swap: dict[str, Any] | None = None,
                 sim: tuple[float | None, float | None] = (None, None)) -> str:
    """The report's one-paragraph answer. ``sim``: (shipped, retrained) held-out returns from
    simulation as the bundles' provenance records them (None: not recorded)."""
    d, rel = cmp["delta_mean"], cmp["delta_relative"]
    if not math.isfinite(d):
        return "no comparison: the after-swap episodes are missing"
    if swap_refused(swap):
        return ("The retrained model was not swapped in: the policy node's provenance guard "
                f"refused it ({swap.get('reason', '')}). The shipped model stays; both blocks "
                f"ran it, so their difference ({d:+.1f}, mean {cmp['after_mean']:.1f} vs "
                f"{cmp['before_mean']:.1f}) is the repeat noise of the measurement on the "
                "robot. `pearl-robot demo --override-guard` swaps it anyway and lets the "
                "canary judge it on the robot.")
    bad = ignored_phases(ignored)
    if bad:
        return ("NO VALID COMPARISON: the device was disarmed and ignored "
                + ", ".join(f"{n} of the {t} commands of the {k} phase"
                            for k, (n, t) in bad.items())
                + f" (tolerance {IGNORED_COMMANDS_TOLERANCE:.0%}); the returns below are of a "
                f"robot that did not move as commanded (measured {cmp['after_mean']:.1f} after "
                f"vs {cmp['before_mean']:.1f} before).")
    how = (f"mean return {cmp['after_mean']:.1f} vs {cmp['before_mean']:.1f} "
           f"(difference {d:+.1f}, {rel:+.0%} of the shipped model's |return|; spread across "
           f"tasks {cmp['delta_std_across_tasks']:.1f}; better on {cmp['tasks_better']} of "
           f"{cmp['tasks']} tasks)")
    noise = cmp.get("repeat_noise", math.nan)
    se = cmp.get("delta_se", math.nan)
    in_sim = ""
    if sim[0] is not None and sim[1] is not None:
        in_sim = (f" In simulation (the retrain's held-out evaluation on the twin's nominal "
                  f"physics) it scored {sim[1]:.1f} against the shipped model's {sim[0]:.1f}.")
    if d >= 0:
        head = f"The retrained model is at least as good as the shipped one on the robot: {how}."
    elif math.isfinite(se) and abs(d) <= 2.0 * se:
        head = (f"The retrained model scored lower than the shipped one on the robot, within "
                f"two standard errors of the difference ({se:.1f} each, from the repeat noise "
                f"this run measured): {how}. With this many episodes the run cannot tell the "
                f"two apart.{in_sim}")
        in_sim = ""
    else:
        why = ("it was retrained from scratch in minutes (the shipped bundle's checkpoint is "
               "not on this machine, so there was nothing to warm-start from), against a "
               "shipped model trained for much longer") if not warm else (
               "the retrain warm-started from the shipped checkpoint but the night's data and "
               "the few minutes of training moved it the wrong way")
        if warm and sim[0] is not None and sim[1] is not None and sim[1] >= sim[0]:
            why = ("it is as good in simulation (below) but not on this robot: the night ran "
                   "on the twin (an accelerated night cannot run on a real-time serial robot), "
                   "so no episode the retrain learned from has this robot's physics, and the "
                   "retrain moved the policy in a way the twin does not penalize and this "
                   "robot does (the likely reason; this run does not isolate it)")
        head = (f"The retrained model is worse than the shipped one on the robot: {how}. "
                f"Why: {why}.")
    head += in_sim
    if math.isfinite(noise):
        head += (f" Repeat noise of one episode on the robot, measured in this run: {noise:.1f}"
                 f" (mean |difference| of repeated episodes); standard error of the before/after "
                 f"difference: {se:.1f}"
                 f"{' (the difference is within two of them)' if abs(d) <= 2 * se else ''}.")
    if canary:
        head += (f" Canary: {canary['decision']} (new {canary.get('new_mean') or math.nan:.1f} "
                 f"vs old {canary.get('old_mean') or math.nan:.1f}, allowed drop "
                 f"{canary['threshold']:.1f}); the robot kept the {kept} model.")
    return head


def build_report(out: Path, result: dict[str, Any], render: bool = True) -> ReportFiles:
    """Write ``report.html`` and its PNGs into ``out``."""
    from pearl_robot.runtime.bundle import read_contract
    from pearl_robot.runtime.canary import held_out_score
    from pearl_robot.tasks.registry import make_family

    cfg = result["config"]
    ept = int(cfg["episodes_per_task"])
    rows = result.get("episodes", [])
    family = make_family(result["family"])
    contract = read_contract(result["bundle"])
    latent, period = contract.latent_dim, contract.control_period
    eps = _robot_episodes(Path(result["robot_dataset"]))
    diags = []
    dpath = out / "diagnostics.jsonl"
    if dpath.is_file():
        diags = [json.loads(line) for line in dpath.read_text().splitlines() if line.strip()]
    refs = _attach_references(rows, eps, family, cfg)
    steps = max((len(e["obs"]) for e in eps.values()), default=0) or None
    swapped = not swap_refused(result.get("swap"))
    pngs = [plot_returns(rows, refs, out / "returns.png", ept,
                         meaning=return_meaning(family.name, steps), swapped=swapped)]
    belief = plot_belief(rows, eps, out / "belief.png", latent, period)
    rtt = [float(d["values"]["rtt_last_ms"]) for d in diags
           if "serial link" in d["name"] and "rtt_last_ms" in d["values"]]
    timing_png, timing = plot_timing(eps, rtt, out / "timing.png", period)
    pngs += [p for p in (belief, timing_png) if p is not None]
    strip = None
    if render and result.get("retrain") and rows:
        try:
            strip = filmstrip(family, [("shipped", Path(result["bundle"])),
                                       ("retrained", Path(result["retrain"]["bundle"]))],
                              cfg["robot_params"], rows[0]["task"], ept,
                              out / "filmstrip.png", cfg["seed"], period)
        except Exception as exc:  # noqa: BLE001 - no EGL/OSMesa: the page says so
            print(f"report: filmstrip not rendered ({type(exc).__name__}: {exc})")
        if strip is not None:
            pngs.append(strip)
    cmp = compare(rows)
    warm = bool((result.get("retrain") or {}).get("warm_start"))
    sim = (held_out_score(contract.provenance),
           (result.get("retrain") or {}).get("held_out_sim", {}).get("final"))
    verdict = verdict_text(cmp, result.get("canary"), result.get("kept_model", "?"), warm,
                           result.get("commands_ignored"), result.get("swap"), sim)
    summary = {"comparison": cmp, "verdict": verdict, "timing": timing,
               "canary": result.get("canary"), "kept_model": result.get("kept_model"),
               "swap": result.get("swap"),
               "references": {str(k): {"zero": v[0], "oracle": v[1]} for k, v in refs.items()},
               "stages": result.get("stages"), "wall_s": result.get("wall_s"),
               "night": result.get("night"), "retrain": result.get("retrain"),
               "commands_ignored": result.get("commands_ignored"),
               "operator": result.get("operator", [])}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    page = _page(result, family.name, verdict, cmp, refs, rows, diags,
                 _Figures(pngs[0], belief, strip, timing_png), timing)
    page_path = out / "report.html"
    page_path.write_text(page)
    return ReportFiles(page_path, tuple(pngs), summary)


def _attach_references(rows: list[dict[str, Any]], eps: dict[int, Any], family: Any,
                       cfg: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """The zero-effort and oracle returns of each logged episode, simulated from its start
    pose (written into its row), and their mean per task."""
    refs_by_task: dict[int, list[tuple[float, float]]] = {}
    for r in rows:
        e = eps.get(r["episode"])
        if e is None or not len(e["obs"]):
            continue
        q0 = e["obs"][0, :family.make_env(seed=0).action_dim]
        refs_by_task.setdefault(r["task"], []).append(baselines(
            family, cfg["robot_params"], r["task"], q0, len(e["obs"]), cfg["seed"]))
        r["zero_return"], r["oracle_return"] = refs_by_task[r["task"]][-1]
    return {t: (float(np.mean([z for z, _ in v])), float(np.mean([o for _, o in v])))
            for t, v in refs_by_task.items()}


def _status_html(diags: list[dict[str, Any]]) -> str:
    """The last /diagnostics status of the link, the logger and the loop, as tables."""
    out = []
    for label, key in (("serial link (bridge_node)", "serial link"),
                       ("episode log (logger_node)", "episode log"),
                       ("control loop (policy_node)", "control loop")):
        st = _last_status(diags, key)
        if st is None:
            out.append(f"<h3>{html.escape(label)}</h3><p><em>no status seen</em></p>")
            continue
        out.append(f"<div><h3>{html.escape(label)}: {html.escape(st['message'])}</h3>"
                   + _table([[k, v] for k, v in st["values"].items()], ["key", "value"])
                   + "</div>")
    return "".join(out)


class _Figures(NamedTuple):
    """The page's pictures (None: not made)."""

    returns: Path
    belief: Path | None
    filmstrip: Path | None
    timing: Path | None


def _page(result: dict[str, Any], family_name: str, verdict: str, cmp: dict[str, Any],
          refs: dict[int, tuple[float, float]], rows: list[dict[str, Any]],
          diags: list[dict[str, Any]], figs: _Figures, timing: dict[str, Any]) -> str:
    """The report page (self-contained HTML next to its PNGs)."""
    cfg = result["config"]
    after_label = "after (shipped again, swap refused)" if swap_refused(result.get("swap")) \
        else "after (retrained)"
    stage_rows = [[s["stage"], s["wall_s"], ", ".join(f"{k}={v}" for k, v in s.items()
                                                      if k not in ("stage", "wall_s"))]
                  for s in result.get("stages", [])]
    task_rows = [[t, v["before"], v["after"], v["delta"], refs.get(t, (math.nan,) * 2)[0],
                  refs.get(t, (math.nan,) * 2)[1]] for t, v in cmp["per_task"].items()]
    ep_rows = [[r["episode"], r["phase"], r["task"], r["trial"] + 1, r["return"],
                r.get("zero_return", math.nan), r.get("oracle_return", math.nan),
                r["model_sha"][:12]] for r in rows]
    night = result.get("night") or {}
    retrain = result.get("retrain") or {}
    sim = retrain.get("held_out_sim") or {}
    canary = result.get("canary")
    canary_rows = [] if not canary else [[j["task"], j["trial"] + 1, j["new_return"],
                                          j["old_return"]] for j in canary.get("judged", [])]
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>pearl_robot: the sim-to-real loop</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}}
img{{max-width:100%;border:1px solid #ddd;margin:.4em 0}}
table{{border-collapse:collapse;font-size:13px;margin:.4em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
.row{{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}}
.verdict{{background:#f4f4f4;border-left:4px solid #36c;padding:.6em 1em}}</style></head><body>
<h1>The sim-to-real loop: evening, night, morning, hot-swap</h1>
<p>Bundle <code>{html.escape(result['bundle'])}</code> ({result['bundle_sha256'][:12]}) on the
emulated robot (firmware emulator on a pseudo-terminal, serial bridge, {family_name}); seed
{cfg['seed']}; total wall time {result.get('wall_s', math.nan)} s.</p>
<p class="verdict">{html.escape(verdict)}</p>
<h2>Returns on the held-out tasks, before and after the swap</h2>
{_img(figs.returns, 'returns')}
{_table(task_rows, ['task', 'before (shipped)', after_label, 'after - before',
                    'zero effort', 'oracle'])}
<p>Noise: the robot runs in real time over the serial link, so two runs with the same seed
differ by the link's timing (which tick a state lands in) and by where the previous episode
left the arm. Measured in this run: the confirmation block repeats the kept model on the first
task, and one episode's return differed from the same model's earlier episode on the same
(task, trial) by {cmp['repeat_noise']:.1f} on average. For Gaussian noise that is an
episode's standard deviation times 2/sqrt(pi), so the difference of the before and after means
has a standard error of {cmp.get('delta_se', math.nan):.1f}; a difference within two of them is
noise. The estimate itself rests on the confirmation block's few episodes. References are
simulated from each episode's start pose with the robot's physics.</p>
<h2>Canary</h2>
<p>Provenance guard (the held-out scores the two bundles record from simulation):
{html.escape(_guard_text(result.get('swap')))}.</p>
{_canary_html(canary, result)}
{_table(canary_rows, ['task', 'episode on task', 'new return', 'old mean (same task, trial)'])}
<h2>Belief within episodes</h2>{_img(figs.belief, 'belief')}
<h2>The twin before and after adaptation</h2>{_img(figs.filmstrip, 'filmstrip')}
<h2>Loop timing</h2>{_img(figs.timing, 'timing')}
{_table([[k, v] for k, v in timing.items()], ['measure', 'value'])}
<h2>Night and morning</h2>
<p>Night: {night.get('episodes', '-')} episodes, {night.get('transitions', '-')} transitions,
{(night.get('robot_s') or 0) / 60:.1f} min of robot time in {night.get('wall_s', '-')} s wall
(twin at {cfg['night_rtf']}x) on tasks {result.get('night_tasks')}; simulated and not logged:
tasks {result.get('sim_tasks')}. Retrain: {cfg['train_iterations']} iterations in
{retrain.get('train_wall_s', '-')} s, warm start: {retrain.get('warm_start') or 'none'};
its own held-out evaluation in simulation: {html.escape(json.dumps(sim))}.</p>
<h2>Stages</h2>{_table(stage_rows, ['stage', 'wall s', 'details'])}
<p>Operator actions: {html.escape('; '.join(result.get('operator') or []) or 'none needed')}.
Commands the device ignored (disarmed) in the measured phases, [ignored, ticks sent]:
{html.escape(json.dumps(result.get('commands_ignored') or {}))} (a comparison needs at most
{IGNORED_COMMANDS_TOLERANCE:.0%}).</p>
<h2>Link, logger and loop statistics (last /diagnostics status)</h2>
<div class="row">{_status_html(diags)}</div>
<h2>Every robot episode</h2>
{_table(ep_rows, ['episode', 'phase', 'task', 'episode on task', 'return', 'zero effort',
                  'oracle', 'model'])}
</body></html>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 4200,
               timeout_s: float = 120.0) -> Path | None:
    """Render the page in headless Chromium; None (and a message) when it is not installed."""
    exe = chromium()
    if exe is None:
        print("report: chromium not installed (Debian: apt-get install chromium); no "
              "browser screenshot")
        return None
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={png}", f"--window-size={width},{height}", page.resolve().as_uri()]
    try:
        subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        print("report: chromium screenshot timed out")
        return None
    return png if png.is_file() else None
