"""``python -m clnet demo memory``: an LSTM policy learns to remember, trained with clnet alone.

The task cannot be solved without memory. Each of many parallel environments shows a cue
(left or right) at the first step of an episode only; then ``delay`` blank steps; at the
last step a query flag appears and the agent must answer with the side it saw. Reward 1
for the right side, 0 otherwise. The query step looks the same whatever the cue was, so a
memoryless policy cannot beat 50%. Episodes of different environments start at different
times, so resets happen in the middle of every rollout.

The loop is the one every recurrent RL library runs:
1. act: ``cell.step(obs, state, reset=starts)`` one step at a time, the state (h, c) kept
   on the device, zeroed where an episode starts; store the rollout and its initial state;
2. learn: ``cell.backward_sequence`` re-runs the stored rollout from that initial state
   with the same resets and returns the gradients of every LSTM weight, given the
   gradient of the loss with respect to each h. The loss is REINFORCE with a learned
   baseline, on the query steps only (the ``mask``), through a linear head in NumPy;
3. update with Adam, a few lines of NumPy.
"""
from __future__ import annotations

import time
from typing import Dict

import numpy as np

from .. import _cli as cli

OBS = 3  # cue left, cue right, query flag


class CueEnvs:
    """``n`` environments of the cue-recall task, episodes of ``delay + 1`` steps."""

    def __init__(self, n: int, delay: int, rng: np.random.Generator):
        self.n, self.length, self.rng = n, delay + 1, rng
        self.t = rng.integers(0, self.length, size=n)  # staggered episodes
        self.cue = rng.integers(0, 2, size=n)

    def observe(self) -> np.ndarray:
        obs = np.zeros((self.n, OBS), dtype=np.float32)
        first = self.t == 0
        obs[first, self.cue[first]] = 1.0
        obs[self.t == self.length - 1, 2] = 1.0
        return obs

    def step(self, actions: np.ndarray):
        """Reward where this was a query step; returns (reward, query, episode_starts_next)."""
        query = self.t == self.length - 1
        reward = np.where(query, (actions == self.cue).astype(np.float32), 0.0)
        self.t = self.t + 1
        done = self.t == self.length
        self.t[done] = 0
        self.cue[done] = self.rng.integers(0, 2, size=int(done.sum()))
        return reward, query, done


class Adam:
    def __init__(self, params: Dict[str, np.ndarray], lr: float):
        self.lr, self.t = lr, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads, b1=0.9, b2=0.999, eps=1e-8):
        self.t += 1
        for k in params:
            self.m[k] = b1 * self.m[k] + (1 - b1) * grads[k]
            self.v[k] = b2 * self.v[k] + (1 - b2) * grads[k] ** 2
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            params[k] = params[k] - self.lr * m_hat / (np.sqrt(v_hat) + eps)


def train(iterations=300, envs=128, delay=10, hidden=32, rollout=None, lr=0.01, seed=0, backend=None,
          target=0.95, echo=print) -> dict:
    """Train until the success rate over the last 10 iterations reaches ``target`` (or
    ``iterations`` run out); returns the final success rate and counts."""
    import clnet

    rng = np.random.default_rng(seed)
    be = clnet.get_backend(backend)
    T = rollout or 2 * (delay + 1)
    cell = clnet.LSTMCell(OBS, hidden, seed=seed)
    params = {f"lstm.{k}": v for k, v in cell.state_dict().items()}
    params.update({"pi.w": rng.normal(0, 0.1, (hidden, 2)), "pi.b": np.zeros(2),
                   "v.w": np.zeros((hidden, 1)), "v.b": np.zeros(1)})
    adam = Adam(params, lr)
    env = CueEnvs(envs, delay, rng)
    state = cell.initial_state(envs, backend=be)
    starts = env.t == 0
    history = []
    echo(f"backend: {be.spec}; {envs} environments, cue recalled {delay} steps later, LSTM({OBS}, {hidden}), "
         f"rollouts of {T} steps")
    t_start = time.perf_counter()
    for it in range(1, iterations + 1):
        # 1. act, one step at a time; the state stays on the device
        h0, c0 = state.h, state.c  # the rollout's initial state, a constant for learning
        xs, resets, hs, acts, rewards, queries = [], [], [], [], [], []
        for t in range(T):
            obs = env.observe()
            h = cell.step(obs, state, reset=starts)
            logits = h @ params["pi.w"] + params["pi.b"]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            a = (rng.random(envs) < p[:, 1]).astype(np.int64)
            xs.append(obs), resets.append(starts), hs.append(h), acts.append(a)
            reward, query, starts = env.step(a)
            rewards.append(reward), queries.append(query)
        hs, acts = np.stack(hs).astype(np.float64), np.stack(acts)
        mask, rewards = np.stack(queries), np.stack(rewards)
        # 2. the loss on the query steps: REINFORCE with a baseline, plus the baseline's error
        logits = hs @ params["pi.w"] + params["pi.b"]
        p = np.exp(logits - logits.max(axis=2, keepdims=True))
        p /= p.sum(axis=2, keepdims=True)
        value = (hs @ params["v.w"] + params["v.b"])[..., 0]
        adv = rewards - value
        n = max(1, int(mask.sum()))
        d_logits = (p - np.eye(2)[acts]) * adv[..., None] / n          # -adv * d log p(a)
        d_value = -adv / n                                               # 0.5 * adv^2
        d_logits *= mask[..., None]
        d_value = d_value * mask
        grad_hs = d_logits @ params["pi.w"].T + d_value[..., None] @ params["v.w"].T
        grads = cell.backward_sequence(np.stack(xs), (h0, c0), np.stack(resets), grad_hs, mask=mask,
                                       backend=be)
        g = {f"lstm.{k}": grads[k].astype(np.float64) for k in cell.state_dict()}
        flat_h = hs.reshape(-1, hidden)
        g["pi.w"] = flat_h.T @ d_logits.reshape(-1, 2)
        g["pi.b"] = d_logits.reshape(-1, 2).sum(axis=0)
        g["v.w"] = flat_h.T @ d_value.reshape(-1, 1)
        g["v.b"] = d_value.sum(keepdims=True).reshape(1)
        # 3. update
        adam.step(params, g)
        cell.load_state_dict({k[5:]: v for k, v in params.items() if k.startswith("lstm.")})
        success = float(rewards[mask].mean()) if mask.any() else 0.0
        history.append(success)
        recent = float(np.mean(history[-10:]))
        if it % 10 == 0 or recent >= target:
            echo(f"iteration {it:4d}: success rate {recent:6.1%} over the last 10 rollouts "
                 f"({time.perf_counter() - t_start:5.1f} s)")
        if len(history) >= 10 and recent >= target:
            break
    return {"success": float(np.mean(history[-10:])), "iterations": len(history),
            "seconds": time.perf_counter() - t_start}


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet demo memory", __doc__)
    parser.add_argument("--envs", type=int, default=128, help="parallel environments (default 128)")
    parser.add_argument("--delay", type=int, default=10, help="steps between cue and query (default 10)")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM hidden units (default 32)")
    parser.add_argument("--iterations", type=int, default=400, help="at most this many rollouts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the environments (default 0)")
    parser.add_argument("--backend", default=None, help="backend spec (default: automatic selection)")
    args = parser.parse_args(argv)
    if args.delay < 1 or args.envs < 1:
        parser.error("--delay and --envs must be at least 1")
    result = train(args.iterations, args.envs, args.delay, args.hidden, seed=args.seed, backend=args.backend)
    ok = result["success"] >= 0.95
    print(f"{'reached' if ok else 'did NOT reach'} 95% success after {result['iterations']} rollouts "
          f"in {result['seconds']:.1f} s (final {result['success']:.1%}; a memoryless policy cannot beat 50%)")
    return 0 if ok else 1
