"""Recurrent PPO against sb3-contrib: ``python -m clnet bench ppo [--steps N] [--sb3-steps N]``.

Trains, in one run, clnet's recurrent PPO (``python -m clnet demo ppo``) and sb3-contrib's
``RecurrentPPO`` with the same hyperparameters (rl-baselines3-zoo's ppo_lstm.yml entry for
CartPoleNoVel-v1), the same network (``--network``), the same environments (gymnasium's
CartPole-v1 with the velocities masked, 8 of them, observations and rewards normalised as the
zoo's VecNormalize does) and the same step budget, and prints for each the environment steps per
second, the wall time of training and the final mean return over 20 deterministic evaluation
episodes (the same evaluation seeds for both).

sb3-contrib ran this at 338 steps per second over its first 4,096 steps and 545 to 693 over 100,000
here (one torch thread, 2 cores; likely faster once episodes are long, since its minibatches
are padded per episode), so 100,000 steps take 3 to 5 minutes: ``--sb3-steps`` gives it a smaller budget for its steps per second when time is short
(its return is then not comparable, and the output says so). clnet runs first, so that torch's
threads, which keep spinning after each call, do not slow it down. sb3-contrib gets one torch
thread by default: its matrices are small, and on this 2-core machine two threads were measured
at least 16 times slower (338 steps per second on one thread; on two, 4,096 steps did not end
within 200 s); ``--torch-threads 0`` keeps torch's default.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .. import _cli as cli

from clnet.demos import ppo


def _sb3_policy_kwargs(network: str) -> dict:
    import torch

    net = ppo.NETWORKS[network]
    if network == "sb3-default":
        return {}  # MlpLstmPolicy's own defaults are what this network is
    activation = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[net["activation"]]
    return dict(ortho_init=net["ortho_init"], activation_fn=activation, lstm_hidden_size=net["lstm_hidden_size"],
                enable_critic_lstm=True, net_arch=dict(pi=list(net["net_arch"]), vf=list(net["net_arch"])))


def run_sb3(steps: int, seed: int, n_envs: int, network: str, progress: bool = True, echo=print,
            torch_threads: int = 1) -> dict:
    """Train sb3-contrib's RecurrentPPO; same result keys as :func:`clnet.demos.ppo.train`."""
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize
    import gymnasium as gym

    hp = dict(ppo.ZOO_HYPERPARAMETERS, **ppo.SB3_PPO_DEFAULTS)
    wrapper = ppo._mask_velocity_wrapper()
    venv = make_vec_env(lambda: wrapper(gym.make("CartPole-v1")), n_envs=n_envs, seed=seed)
    if hp["normalize_obs"] or hp["normalize_reward"]:  # the zoo's "normalize: True"
        venv = VecNormalize(venv, norm_obs=hp["normalize_obs"], norm_reward=hp["normalize_reward"], gamma=hp["gamma"])
    lr0, clip0 = hp["learning_rate"], hp["clip_range"]
    model = RecurrentPPO("MlpLstmPolicy", venv, n_steps=hp["n_steps"], batch_size=hp["batch_size"],
                         n_epochs=hp["n_epochs"], learning_rate=lambda remaining: lr0 * remaining,
                         clip_range=lambda remaining: clip0 * remaining, gamma=hp["gamma"],
                         gae_lambda=hp["gae_lambda"], ent_coef=hp["ent_coef"], vf_coef=hp["vf_coef"],
                         max_grad_norm=hp["max_grad_norm"], policy_kwargs=_sb3_policy_kwargs(network),
                         seed=seed, device="cpu")
    per_rollout = hp["n_steps"] * n_envs
    total = max(1, -(-steps // per_rollout)) * per_rollout
    bar = ppo.ProgressBar(total) if progress else None
    curve = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            buffer = self.model.ep_info_buffer
            recent = float(np.mean([e["r"] for e in list(buffer)[-ppo.EVAL_EPISODES:]])) if buffer else None
            curve.append((self.model.num_timesteps, recent))
            if bar:
                bar.update(self.model.num_timesteps, recent)

    echo(f"sb3-contrib RecurrentPPO, torch {torch.__version__} on {torch.get_num_threads()} threads, "
         f"{total:,} steps")
    t0 = time.perf_counter()
    try:
        model.learn(total_timesteps=total, callback=Record())
    finally:
        if bar:
            bar.close()
    seconds = time.perf_counter() - t0
    rms = venv.obs_rms if hp["normalize_obs"] else None
    returns = _evaluate_sb3(model, rms, ppo.EVAL_EPISODES, seed + 10_000)
    venv.close()
    return dict(returns=returns, mean=float(returns.mean()), std=float(returns.std()), curve=curve,
                steps=int(model.num_timesteps), seconds=seconds, steps_per_second=model.num_timesteps / seconds)


def _evaluate_sb3(model, obs_rms, episodes: int, seed: int) -> np.ndarray:
    """The same evaluation as the demo's: one deterministic episode per environment, the
    normalisation frozen, the same seeds."""
    envs = ppo.make_envs(episodes)
    obs, _ = envs.reset(seed=seed)
    state, starts = None, np.ones(episodes, dtype=bool)
    totals, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    try:
        while not finished.all():
            x = obs if obs_rms is None else np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10, 10)
            actions, state = model.predict(x.astype(np.float32), state=state, episode_start=starts,
                                           deterministic=True)
            obs, reward, terminated, truncated, _ = envs.step(actions)
            starts = terminated | truncated
            totals += np.where(finished, 0.0, reward)
            finished |= starts
    finally:
        envs.close()
    return totals


def _line(name: str, r: dict) -> str:
    return (f"{name:<26} {r['steps']:>8,} steps in {r['seconds']:7.1f} s: {r['steps_per_second']:6.0f} steps/s; "
            f"final mean return {r['mean']:6.1f} +/- {r['std']:5.1f} over {len(r['returns'])} episodes")


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench ppo", __doc__)
    parser.add_argument("--steps", type=int, default=ppo.ZOO_HYPERPARAMETERS["n_timesteps"],
                        help="environment steps for both (default: the zoo's 100000)")
    parser.add_argument("--sb3-steps", type=int, default=None,
                        help="a smaller budget for sb3-contrib only (default: --steps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both trainings and their environments (default 0)")
    parser.add_argument("--envs", type=int, default=ppo.ZOO_HYPERPARAMETERS["n_envs"],
                        help="vectorised environments (default: the zoo's 8)")
    parser.add_argument("--network", choices=sorted(ppo.NETWORKS), default="zoo",
                        help="zoo: the zoo's ppo_lstm.yml network; sb3-default: MlpLstmPolicy's defaults")
    parser.add_argument("--backend", default=None, help="clnet backend spec (default: automatic selection)")
    parser.add_argument("--plot", default=None, help="write both training curves to this PNG (needs matplotlib)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads for sb3-contrib (default 1: its fastest here, see below; 0 = torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    sb3_steps = args.steps if args.sb3_steps is None else args.sb3_steps
    if args.steps < 1 or sb3_steps < 1 or args.envs < 1:
        parser.error("--steps, --sb3-steps and --envs must be at least 1")
    try:
        import sb3_contrib  # noqa: F401
    except ImportError:
        print("bench ppo needs sb3-contrib: pip install 'clnet[bench-rl]'")
        return 2
    ours = ppo.train(args.steps, args.seed, args.envs, args.network, backend=args.backend,
                     progress=not args.no_progress)
    theirs = run_sb3(sb3_steps, args.seed, args.envs, args.network, progress=not args.no_progress,
                     torch_threads=args.torch_threads)
    print()
    print(_line("sb3-contrib RecurrentPPO", theirs))
    print(_line("clnet PPO", ours))
    if theirs["steps"] != ours["steps"]:
        print(f"note: sb3-contrib ran {theirs['steps']:,} steps and clnet {ours['steps']:,}: the steps per second "
              f"compare, the returns do not (a shorter training ends lower)")
    if args.plot:
        if ppo.plot_curves({"clnet": ours["curve"], "sb3-contrib": theirs["curve"]}, args.plot):
            print(f"training curves written to {args.plot}")
        else:
            print("no plot: matplotlib is not installed")
    print(f"speed-up over sb3-contrib: {ours['steps_per_second'] / theirs['steps_per_second']:.1f}x")
    return 0
