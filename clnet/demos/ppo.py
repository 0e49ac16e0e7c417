"""``python -m clnet demo ppo``: recurrent PPO on CartPole without velocities, written on clnet.

CartPole-v1 with the velocity observations zeroed (rl-baselines3-zoo's "CartPoleNoVel":
indices 1 and 3 of the observation are masked) cannot be solved without memory: the policy
must infer the velocities from the positions it saw. This demo trains an LSTM policy on it
with PPO, the recurrent PPO of sb3-contrib (``RecurrentPPO``) rewritten on clnet:

1. act over gymnasium's vectorised environments with ``cell.step(obs, state, reset=starts)``,
   the actor's and the critic's LSTM state kept on the device and zeroed where an episode
   starts; the rollout goes into :class:`clnet.rl.RecurrentRollout`;
2. learn: for every minibatch of stored sequences, ``record_sequence`` of the actor and the
   critic together (a :class:`clnet.CellGroup`, one launch for both) re-evaluates them
   from their stored initial state with the same resets (the outputs ``sequence`` gives,
   the activations kept on the device), the PPO loss and its gradient through the small
   heads are computed in NumPy, and the recording's ``backward`` returns the LSTM weights'
   gradients, those of ``cell.backward_sequence`` without its second forward pass
   (backpropagation through time on the device);
3. clip the global gradient norm and update with Adam, in NumPy. No torch needed.

Hyperparameters: rl-baselines3-zoo's ``ppo_lstm.yml`` entry for CartPoleNoVel-v1
(:data:`ZOO_HYPERPARAMETERS`), with sb3's PPO defaults for what it leaves unset
(:data:`SB3_PPO_DEFAULTS`). Network: ``--network zoo`` (default) is that entry's
``policy_kwargs``; ``--network sb3-default`` is sb3-contrib's ``MlpLstmPolicy`` defaults
(:data:`NETWORKS`).

One difference from sb3-contrib, deliberately: with batch_size = n_envs * n_steps each of its
minibatches is the whole rollout, rotated by a random offset, which cuts one environment's
sequence at a random step (restarting it from the state stored there). Here every minibatch is
the whole rollout too, each environment's 32 steps one sequence from its stored initial state,
cut only by resets, where the gradient is cut anyway.
"""
from __future__ import annotations

import sys
import time
from typing import Dict, List, Optional

import numpy as np

from .. import _cli as cli

# rl-baselines3-zoo, hyperparams/ppo_lstm.yml, CartPoleNoVel-v1 (n_timesteps 1e5; "lin_" = decayed
# linearly to 0 over training). Its "normalize: True" is the zoo's VecNormalize with no keyword
# but gamma: observations AND rewards normalised (rewards by the running std of the discounted
# return, with the algorithm's gamma), as exp_manager._preprocess_normalization does.
ZOO_HYPERPARAMETERS = dict(n_envs=8, n_steps=32, batch_size=256, n_epochs=20, learning_rate=1e-3,
                           clip_range=0.2, gamma=0.98, gae_lambda=0.8, ent_coef=0.0, n_timesteps=100_000,
                           normalize_obs=True, normalize_reward=True)
# stable-baselines3 PPO defaults the zoo entry does not override (and Adam's eps that sb3 sets).
SB3_PPO_DEFAULTS = dict(vf_coef=0.5, max_grad_norm=0.5, normalize_advantage=True, adam_eps=1e-5)
# Network shapes. "zoo": the policy_kwargs of that zoo entry. "sb3-default": sb3-contrib's
# MlpLstmPolicy defaults (lstm_hidden_size=256, a separate critic LSTM, net_arch pi=[64, 64] and
# vf=[64, 64] with tanh, orthogonal initialisation of the heads: gain sqrt(2), 0.01 for the
# action layer, 1 for the value layer; the LSTMs keep PyTorch's default initialisation).
NETWORKS = {
    "zoo": dict(lstm_hidden_size=64, net_arch=[64], activation="relu", ortho_init=False),
    "sb3-default": dict(lstm_hidden_size=256, net_arch=[64, 64], activation="tanh", ortho_init=True),
}
MASKED_INDICES = (1, 3)  # cart velocity, pole angular velocity
EVAL_EPISODES = 20


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------
def _mask_velocity_wrapper():
    import gymnasium as gym

    class MaskVelocity(gym.ObservationWrapper):
        """CartPole with the two velocity observations zeroed (the zoo's CartPoleNoVel)."""

        def __init__(self, env):
            super().__init__(env)
            self._keep = np.ones(env.observation_space.shape, dtype=np.float32)
            self._keep[list(MASKED_INDICES)] = 0.0

        def observation(self, observation):
            return (observation * self._keep).astype(np.float32)

    return MaskVelocity


def make_envs(n: int):
    """``n`` CartPoleNoVel environments, vectorised; a finished episode restarts in the same step
    (its last observation is in ``info["final_obs"]``), as sb3's VecEnv does."""
    try:
        import gymnasium as gym
    except ImportError as exc:  # the optional extra
        raise SystemExit("the ppo demo needs gymnasium: pip install 'clnet[rl]'") from exc
    wrapper = _mask_velocity_wrapper()
    return gym.vector.SyncVectorEnv([lambda: wrapper(gym.make("CartPole-v1")) for _ in range(n)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class ObservationNormalizer:
    """Running mean and variance of observations, as sb3's VecNormalize(norm_obs=True): the
    statistics are updated with each batch before it is normalised, and clipped to +-10."""

    def __init__(self, shape, clip=10.0, epsilon=1e-8):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4
        self.clip, self.epsilon = clip, epsilon

    def update(self, batch: np.ndarray) -> None:
        # np.mean and np.var's own steps (the same bits), without their wrappers' overhead:
        # the two normalisers run at every environment step
        b_count = batch.shape[0]
        b_mean = np.add.reduce(batch, axis=0) / b_count
        centred = batch - b_mean
        b_var = np.add.reduce(centred * centred, axis=0) / b_count
        delta, total = b_mean - self.mean, self.count + b_count
        self.mean = self.mean + delta * b_count / total
        self.var = (self.var * self.count + b_var * b_count + delta ** 2 * self.count * b_count / total) / total
        self.count = total

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        scaled = (obs - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.minimum(np.maximum(scaled, -self.clip), self.clip).astype(np.float32)  # np.clip's result


class RewardNormalizer:
    """Rewards divided by the running standard deviation of each environment's discounted
    return, as sb3's VecNormalize(norm_reward=True): the return is accumulated with ``gamma``
    from the raw rewards, its statistics updated every step before the division, the result
    clipped to +-10, and the return zeroed where an episode ended. The zoo's entry asks for it;
    without it (observations normalised alone) two seeds of three ended below 250 after 100,000
    steps, with it all five tried reach 500 within 150,000 (README, BPTT section)."""

    def __init__(self, n_envs: int, gamma: float, clip=10.0, epsilon=1e-8):
        self.stats = ObservationNormalizer(())
        self.returns = np.zeros(n_envs)
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        self.stats.update(self.returns)
        out = np.minimum(np.maximum(reward / np.sqrt(self.stats.var + self.epsilon), -self.clip), self.clip)
        self.returns[done] = 0.0
        return out


# ---------------------------------------------------------------------------------------------
# Policy: two LSTMs on the device, heads in NumPy
# ---------------------------------------------------------------------------------------------
def _orthogonal(rng, rows, cols, gain):
    """An orthogonal (rows, cols) matrix times ``gain`` (torch.nn.init.orthogonal_'s construction)."""
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return gain * (q if rows >= cols else q.T)


_ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, a: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z, a: 1.0 - a * a),
}


class RecurrentPolicy:
    """An actor LSTM and a separate critic LSTM (sb3-contrib's ``enable_critic_lstm=True``),
    each followed by an MLP (``net_arch``) and a linear layer: action logits and a value.

    Parameters live in :attr:`params` (NumPy arrays in the device's dtype, float32 unless asked
    otherwise, as torch keeps sb3-contrib's): ``actor.weight_ih`` ... (the
    LSTMs, PyTorch's names) and ``pi.0.w``, ``pi.0.b``, ..., ``action.w``, ``vf.0.w``, ...,
    ``value.w``; linear weights are ``(in, out)``. :meth:`sync` copies the LSTM weights to the cells.

    While acting, the two LSTMs run as one cell of 2H units (:attr:`fused`) whose recurrent
    weights are block-diagonal: units 0..H-1 of every gate are the actor's, H..2H-1 the
    critic's, and the off-diagonal blocks stay zero, so it computes exactly the two separate
    LSTMs in one launch per environment step (at a batch of 8 a launch costs more than the
    zero blocks). While learning, ``record_sequence`` and its ``backward`` run on the separate
    :attr:`actor` and :attr:`critic` cells instead, as one :class:`clnet.CellGroup`
    (:attr:`learning`: both in the launches of one cell, without zero blocks): over a whole
    minibatch the zero blocks' arithmetic is what costs. Measured on PoCL (2 cores), one sequence and backward_sequence
    of 32 steps x 8 environments, weights changed before each: 107 ms for the fused 512-unit
    cell against 27 ms for two 256-unit cells (MlpLstmPolicy's network), 6.8 against 5.8 ms at
    64 units (the zoo's). The fused cell is loaded once per rollout, when acting asks for it
    (:meth:`acting_cell`), not after each of the 20 updates.
    """

    def __init__(self, obs_size: int, n_actions: int, network: dict, seed: int, backend=None, dtype=None):
        import clnet

        self.backend = clnet.get_backend(backend)
        self.dtype = self.backend.check_dtype(dtype)
        self.obs_size, self.n_actions = obs_size, n_actions
        self.hidden = network["lstm_hidden_size"]
        self.net_arch = list(network["net_arch"])
        self.activation = network["activation"]
        rng = np.random.default_rng(seed)
        H = self.hidden
        self.actor = clnet.LSTMCell(obs_size, H, seed=int(rng.integers(2 ** 31)))
        self.critic = clnet.LSTMCell(obs_size, H, seed=int(rng.integers(2 ** 31)))
        self.fused = clnet.LSTMCell(obs_size, 2 * H)
        # learning: the actor and the critic recorded and run backwards as one group (one
        # launch each way for both, see clnet.CellGroup)
        self.learning = clnet.CellGroup([self.actor, self.critic])
        self.lstm_keys = list(self.actor.state_dict())  # weight_ih, weight_hh, bias_ih, bias_hh
        self.params: Dict[str, np.ndarray] = {}
        for name, cell in (("actor", self.actor), ("critic", self.critic)):
            for k, v in cell.state_dict().items():
                self.params[f"{name}.{k}"] = v
        for tower, out_name, out_size, out_gain in (("pi", "action", n_actions, 0.01), ("vf", "value", 1, 1.0)):
            sizes = [H] + self.net_arch
            for i in range(len(self.net_arch)):
                self._linear(rng, f"{tower}.{i}", sizes[i], sizes[i + 1], np.sqrt(2), network["ortho_init"])
            self._linear(rng, out_name, sizes[-1], out_size, out_gain, network["ortho_init"])
        # One flat vector holds every parameter; params[k] are views into it, so the optimiser
        # and the norm clipping are a few whole-vector operations, not a loop per tensor. It is
        # in the dtype the cells compute in: Adam over MlpLstmPolicy's 578k parameters took
        # 1.9 ms per update in float64 against 0.7 ms in float32, and the heads' products halve.
        self.names = list(self.params)
        self.flat = np.concatenate([self.params[k].ravel() for k in self.names]).astype(self.dtype)
        offset = 0
        for k in self.names:
            shape = self.params[k].shape
            self.params[k] = self.flat[offset:offset + int(np.prod(shape))].reshape(shape)
            offset += int(np.prod(shape))
        self.sync()

    def _linear(self, rng, name, n_in, n_out, gain, ortho):
        if ortho:  # sb3's ortho_init: orthogonal weights, zero biases
            self.params[name + ".w"] = _orthogonal(rng, n_out, n_in, gain).T.copy()
            self.params[name + ".b"] = np.zeros(n_out)
        else:      # PyTorch's nn.Linear default: uniform in +-1/sqrt(fan_in)
            bound = 1.0 / np.sqrt(n_in)
            self.params[name + ".w"] = rng.uniform(-bound, bound, size=(n_in, n_out))
            self.params[name + ".b"] = rng.uniform(-bound, bound, size=n_out)

    def flatten(self, grads: Dict[str, np.ndarray]) -> np.ndarray:
        """The gradients as one vector in the order of :attr:`flat`."""
        return np.concatenate([np.ravel(grads[k]) for k in self.names], dtype=self.flat.dtype)

    def sync(self) -> None:
        """Load the LSTM weights of :attr:`params` into the actor and critic cells (after an
        optimiser step); the fused acting cell is reloaded when next asked for."""
        for name, cell in (("actor", self.actor), ("critic", self.critic)):
            cell.load_state_dict({k: self.params[f"{name}.{k}"] for k in self.lstm_keys})
        self._fused_stale = True

    def acting_cell(self):
        """The fused actor-critic cell (block-diagonal, see the class), with the current weights."""
        if self._fused_stale:
            H = self.hidden
            fused = {}
            for k in self.lstm_keys:
                a, c = self.params[f"actor.{k}"], self.params[f"critic.{k}"]
                if k == "weight_hh":   # (4, 2H, 2H), gate by gate: actor block, zeros, critic block
                    w = np.zeros((4, 2 * H, 2 * H))
                    w[:, :H, :H] = a.reshape(4, H, H)
                    w[:, H:, H:] = c.reshape(4, H, H)
                else:                  # weight_ih (4, 2H, I), biases (4, 2H)
                    w = np.concatenate([a.reshape((4, H) + a.shape[1:]), c.reshape((4, H) + c.shape[1:])], axis=1)
                fused[k] = w.reshape((8 * H,) + w.shape[2:])
            self.fused.load_state_dict(fused)
            self._fused_stale = False
        return self.fused

    def actor_cell(self):
        """The actor's own LSTM cell, with the current weights."""
        return self.actor

    def initial_state(self, batch: int):
        """The fused (actor, critic) state: h and c of 2H units, kept on the device."""
        return self.acting_cell().initial_state(batch, backend=self.backend, dtype=self.dtype)

    # -- heads ------------------------------------------------------------------------------
    def _tower(self, tower: str, out_name: str, h: np.ndarray):
        """Forward through one MLP tower and its output layer; returns (output, cache)."""
        act = _ACTIVATIONS[self.activation][0]
        x, cache = h.astype(self.flat.dtype, copy=False), []
        for i in range(len(self.net_arch)):
            z = x @ self.params[f"{tower}.{i}.w"] + self.params[f"{tower}.{i}.b"]
            a = act(z)
            cache.append((x, z, a))
            x = a
        out = x @ self.params[out_name + ".w"] + self.params[out_name + ".b"]
        cache.append((x, None, None))
        return out, cache

    def _tower_backward(self, tower: str, out_name: str, cache, d_out: np.ndarray, grads: dict) -> np.ndarray:
        """Gradients of the tower's weights (into ``grads``) given d(loss)/d(output); returns d/dh."""
        deriv = _ACTIVATIONS[self.activation][1]
        d_out = d_out.astype(self.flat.dtype, copy=False)  # the loss's float64 terms: back to the heads' dtype
        x_last = cache[-1][0]
        grads[out_name + ".w"] = x_last.T @ d_out
        grads[out_name + ".b"] = d_out.sum(axis=0)
        d = d_out @ self.params[out_name + ".w"].T
        for i in reversed(range(len(self.net_arch))):
            x, z, a = cache[i]
            dz = d * deriv(z, a)
            grads[f"{tower}.{i}.w"] = x.T @ dz
            grads[f"{tower}.{i}.b"] = dz.sum(axis=0)
            d = dz @ self.params[f"{tower}.{i}.w"].T
        return d

    def logits(self, h_pi: np.ndarray) -> np.ndarray:
        return self._tower("pi", "action", h_pi)[0]

    def value(self, h_vf: np.ndarray) -> np.ndarray:
        return self._tower("vf", "value", h_vf)[0][..., 0]


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def ppo_gradients(policy: RecurrentPolicy, batch, clip_range: float, *, vf_coef: float, ent_coef: float,
                  normalize_advantage: bool = True):
    """The PPO loss of one minibatch of stored sequences and its gradient for every parameter.

    The sequences are re-run by the actor and the critic cell from their stored initial states
    (with the same resets) with the group's ``record_sequence`` (:attr:`RecurrentPolicy.learning`,
    both cells in one launch), which keeps the activations on the device
    for the backward; the loss is sb3's: the clipped surrogate, ``vf_coef`` times the squared error
    of the value against the GAE returns and ``ent_coef`` times minus the entropy, each averaged
    over the steps where ``batch.mask`` is 1 (advantages normalised over those steps). The
    heads' gradients are computed here; the LSTMs' come from the recordings' ``backward``
    (``backward_sequence`` without running the forward again).
    Returns ``(grads, stats)``.
    """
    S, M = batch.mask.shape
    H = policy.hidden
    be, dt = policy.backend, policy.dtype
    xs, resets = batch.obs, batch.resets
    h0, c0 = batch.initial_states["policy"]  # the fused state: the actor's units, then the critic's
    initial = [(h0[:, :H], c0[:, :H]), (h0[:, H:], c0[:, H:])]
    # both cells' forward in one group, kept on the device for the backward (record_sequence)
    recorded = policy.learning.record_sequence(xs, initial, resets, backend=be, dtype=dt)
    hs = {"actor": recorded.hs[0], "critic": recorded.hs[1]}
    mask = batch.mask.reshape(-1)
    count = mask.sum()
    # Without burn-in or padding rows every step counts: the masked means are then plain ones
    # (the same values bit for bit) without a boolean gather each; these 256-element NumPy
    # calls, a few microseconds apiece, were a fifth of a 64-unit minibatch.
    on = slice(None) if count == mask.size else mask > 0
    logits, pi_cache = policy._tower("pi", "action", hs["actor"].reshape(-1, H))
    value_out, vf_cache = policy._tower("vf", "value", hs["critic"].reshape(-1, H))
    values = value_out[:, 0]
    logp_all = log_softmax(logits)
    probs = np.exp(logp_all)
    actions = batch.actions.reshape(-1)
    rows = np.arange(actions.size)
    logp = logp_all[rows, actions]
    adv = batch.advantages.reshape(-1)
    if normalize_advantage:  # torch's std is the unbiased one
        centred = adv - adv[on].mean()  # np.std's own steps, its centred values used once more
        kept = centred[on]
        adv = centred / (np.sqrt(np.add.reduce(kept * kept) / (kept.size - 1)) + 1e-8)
    ratio = np.exp(logp - batch.log_probs.reshape(-1))
    surrogate = adv * ratio
    clipped = adv * np.clip(ratio, 1 - clip_range, 1 + clip_range)
    policy_loss = -(np.minimum(surrogate, clipped) * mask).sum() / count
    returns = batch.returns.reshape(-1)
    value_loss = (((returns - values) ** 2) * mask).sum() / count
    entropy = -(probs * logp_all).sum(axis=1)
    entropy_loss = -(entropy * mask).sum() / count
    # d(loss)/d(logits): the surrogate's gradient reaches log p only where the unclipped term is
    # the smaller one (where both are equal the ratio is inside the clip range: the same).
    d_logp = -np.where(surrogate <= clipped, adv, 0.0) * ratio * mask / count
    onehot_minus_probs = -probs         # 1 - p where the action was taken: the same rounding
    onehot_minus_probs[rows, actions] += 1.0
    d_logits = d_logp[:, None] * onehot_minus_probs
    if ent_coef:
        d_logits += ent_coef * (mask / count)[:, None] * probs * (logp_all + entropy[:, None])
    d_values = vf_coef * 2.0 * (values - returns) * mask / count
    grads: Dict[str, np.ndarray] = {}
    d_h_pi = policy._tower_backward("pi", "action", pi_cache, d_logits, grads)
    d_h_vf = policy._tower_backward("vf", "value", vf_cache, d_values[:, None], grads)
    # observations need no gradient (inputs=False)
    lstm_grads = recorded.backward([d_h_pi.reshape(S, M, H), d_h_vf.reshape(S, M, H)], inputs=False)
    for name, g in zip(("actor", "critic"), lstm_grads):
        for k in policy.lstm_keys:
            grads[f"{name}.{k}"] = g[k]
    stats = dict(policy_loss=policy_loss, value_loss=value_loss, entropy_loss=entropy_loss,
                 loss=policy_loss + ent_coef * entropy_loss + vf_coef * value_loss,
                 clip_fraction=float(np.count_nonzero((np.abs(ratio - 1) > clip_range)[on]) / count),
                 approx_kl=float(((ratio - 1) - np.log(ratio))[on].mean()))
    return grads, stats


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale the gradient vector (every parameter's, flattened) in place so that its L2 norm
    is at most ``max_norm``, as torch.nn.utils.clip_grad_norm_ over all of a model's
    parameters; returns the norm before clipping."""
    total = float(np.sqrt(grad @ grad))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        grad *= scale
    return total


class Adam:
    """Adam as torch.optim.Adam (bias-corrected moments) on one flat parameter vector, updated
    in place; the learning rate is given per step."""

    def __init__(self, size: int, eps: float, betas=(0.9, 0.999), dtype=np.float64):
        self.eps, (self.b1, self.b2), self.t = eps, betas, 0
        self.m, self.v = np.zeros(size, dtype), np.zeros(size, dtype)
        self._work = np.empty(size, dtype)  # one scratch vector: no temporaries of the parameters' size

    # Elements per pass: the twelve whole-vector operations of a step run chunk by chunk, so
    # that the five vectors' chunks (1.3 MB in float32) stay in the L2 between operations.
    # MlpLstmPolicy's 578k parameters: 1.8 ms a step whole, 1.2 ms in chunks (2-core Xeon); the
    # result is the same bit for bit (every operation is elementwise).
    CHUNK = 65536

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for start in range(0, params.size, self.CHUNK):
            part = slice(start, start + self.CHUNK)
            m, v, work, g = self.m[part], self.v[part], self._work[part], grad[part]
            m *= self.b1
            np.multiply(g, 1 - self.b1, out=work)
            m += work
            v *= self.b2
            np.multiply(g, g, out=work)
            work *= 1 - self.b2
            v += work
            # params -= lr / c1 * m / (sqrt(v / c2) + eps), torch's order of operations
            np.divide(v, c2, out=work)
            np.sqrt(work, out=work)
            work += self.eps
            np.divide(m, work, out=work)
            work *= lr / c1
            params[part] -= work


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------
class ProgressBar:
    def __init__(self, total: int, stream=None, width: int = 24):
        self.total, self.stream, self.width = total, stream or sys.stderr, width
        self.start = time.perf_counter()

    def update(self, steps: int, recent: Optional[float]) -> None:
        done = min(1.0, steps / self.total)
        bar = "#" * int(done * self.width) + "." * (self.width - int(done * self.width))
        rate = steps / max(time.perf_counter() - self.start, 1e-9)
        ret = "   -  " if recent is None else f"{recent:6.1f}"
        self.stream.write(f"\r[{bar}] {steps:>7,}/{self.total:,} steps  {rate:6.0f} steps/s  "
                          f"recent mean return {ret}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def evaluate(policy: RecurrentPolicy, normalizer: Optional[ObservationNormalizer], episodes: int, seed: int):
    """Returns of ``episodes`` deterministic episodes (argmax action), one per environment, run in
    parallel; the normaliser's statistics are frozen."""
    envs = make_envs(episodes)
    obs, _ = envs.reset(seed=seed)
    actor = policy.actor_cell()
    actor_state = actor.initial_state(episodes, backend=policy.backend, dtype=policy.dtype)
    totals, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    try:
        while not finished.all():
            x = normalizer(obs) if normalizer is not None else obs.astype(np.float32)
            h = actor.step(x, actor_state)
            actions = policy.logits(h).argmax(axis=1)
            obs, reward, terminated, truncated, _ = envs.step(actions)
            totals += np.where(finished, 0.0, reward)
            finished |= terminated | truncated  # later episodes of an environment are not counted
    finally:
        envs.close()
    return totals


def _single_threaded_blas():
    """A context in which NumPy's BLAS runs on one thread (threadpoolctl, when installed).

    The heads' matrices are tiny (256 x 64): a multi-threaded BLAS spends far more time waking
    and synchronising its threads than multiplying, and on a loaded machine it was measured 60
    times slower than one thread here. The OpenCL device keeps the cores busy meanwhile."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def train(steps: int = ZOO_HYPERPARAMETERS["n_timesteps"], seed: int = 0, n_envs: int = ZOO_HYPERPARAMETERS["n_envs"],
          network: str = "zoo", backend=None, dtype=None, progress: bool = True,
          eval_episodes: int = EVAL_EPISODES, echo=print, hyperparameters: Optional[dict] = None) -> dict:
    """Train for ``steps`` environment steps (whole rollouts); returns the final evaluation
    returns, the training curve ``[(steps, recent mean return)]`` and the timing."""
    with _single_threaded_blas():
        return _train(steps, seed, n_envs, network, backend, dtype, progress, eval_episodes, echo, hyperparameters)


class Trainer:
    """The training loop in two halves, :meth:`collect` (one rollout) and :meth:`learn` (the
    epochs over it), so that a test can look at one rollout and its gradients."""

    def __init__(self, steps, seed=0, n_envs=ZOO_HYPERPARAMETERS["n_envs"], network="zoo", backend=None,
                 dtype=None, hyperparameters=None):
        from clnet.rl import RecurrentRollout

        hp = dict(ZOO_HYPERPARAMETERS, **SB3_PPO_DEFAULTS)
        hp.update(hyperparameters or {})
        hp["n_envs"] = n_envs
        self.hp, self.network = hp, network
        self.rng = np.random.default_rng(seed)
        self.envs = make_envs(n_envs)
        obs_size = int(np.prod(self.envs.single_observation_space.shape))
        self.n_actions = int(self.envs.single_action_space.n)
        self.policy = RecurrentPolicy(obs_size, self.n_actions, NETWORKS[network], seed, backend, dtype)
        self.adam = Adam(self.policy.flat.size, hp["adam_eps"], dtype=self.policy.flat.dtype)
        self.normalizer = ObservationNormalizer(obs_size) if hp["normalize_obs"] else None
        self.reward_normalizer = RewardNormalizer(n_envs, hp["gamma"]) if hp["normalize_reward"] else None
        hidden = self.policy.hidden
        self.rollout = RecurrentRollout(hp["n_steps"], n_envs, obs_size, {"policy": 2 * hidden})
        self.per_rollout = hp["n_steps"] * n_envs
        self.iterations = max(1, -(-steps // self.per_rollout))
        self.total = self.iterations * self.per_rollout
        self.obs = self._prepare(self.envs.reset(seed=seed)[0])
        self.starts = np.ones(n_envs, dtype=bool)
        self.state = self.policy.initial_state(n_envs)
        self.episode_return = np.zeros(n_envs)
        self.finished: List[float] = []
        self.timesteps = 0
        self.stats = {}

    def _prepare(self, raw):
        if self.normalizer is None:
            return raw.astype(np.float32)
        self.normalizer.update(raw)
        return self.normalizer(raw)

    def collect(self) -> None:
        """One rollout of ``n_steps`` steps of every environment into :attr:`rollout`, with its
        returns; the cells are stepped one timestep at a time, their state on the device."""
        policy, ro, n_envs, gamma = self.policy, self.rollout, self.rollout.n_envs, self.hp["gamma"]
        ro.clear()
        for t in range(ro.n_steps):
            ro.store_states(policy=self.state)
            h = policy.acting_cell().step(self.obs, self.state, reset=self.starts)
            H = policy.hidden
            h_pi, h_vf = h[:, :H], h[:, H:]
            logp_all = log_softmax(policy.logits(h_pi))
            cumulative = np.cumsum(np.exp(logp_all), axis=1)
            actions = np.minimum((self.rng.random((n_envs, 1)) > cumulative).sum(axis=1), self.n_actions - 1)
            values = policy.value(h_vf)
            raw, reward, terminated, truncated, info = self.envs.step(actions)
            reward = reward.astype(np.float64)
            done = terminated | truncated
            self.episode_return += reward   # the raw return, for the progress bar and the curve
            self.finished.extend(self.episode_return[done].tolist())
            self.episode_return[done] = 0.0
            if self.reward_normalizer is not None:
                reward = self.reward_normalizer(reward, done)
            next_obs = self._prepare(raw)
            cut = truncated & ~terminated
            if cut.any():  # time limit: bootstrap from the value of the final observation, as sb3 does
                final = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)]).astype(np.float64)
                x = self.normalizer(final) if self.normalizer is not None else final.astype(np.float32)
                h_next, _ = policy.acting_cell()(x, (h[cut], self.state.c[cut]), backend=policy.backend, dtype=policy.dtype)
                reward[cut] += gamma * policy.value(h_next[:, H:])
            ro.add(self.obs, self.starts, actions, reward, values, logp_all[np.arange(n_envs), actions])
            self.obs, self.starts = next_obs, done
        self.timesteps += self.per_rollout
        # the value after the last step, without advancing the critic's state
        keep = (~self.starts)[:, None].astype(np.float32)
        h_last, _ = policy.acting_cell()(self.obs, (self.state.h * keep, self.state.c * keep),
                                 backend=policy.backend, dtype=policy.dtype)
        ro.compute_returns(policy.value(h_last[:, policy.hidden:]), self.starts, gamma, self.hp["gae_lambda"])

    def schedule(self):
        """sb3's linear decay: learning rate and clip range times the progress remaining after
        the rollout just collected."""
        remaining = 1.0 - self.timesteps / self.total
        return self.hp["learning_rate"] * remaining, self.hp["clip_range"] * remaining

    def learn(self) -> None:
        hp, policy = self.hp, self.policy
        lr, clip = self.schedule()
        for epoch in range(hp["n_epochs"]):
            for batch in self.rollout.minibatches(hp["batch_size"], self.rng):
                grads, self.stats = ppo_gradients(policy, batch, clip, vf_coef=hp["vf_coef"], ent_coef=hp["ent_coef"],
                                                  normalize_advantage=hp["normalize_advantage"])
                grad = policy.flatten(grads)
                clip_grad_norm(grad, hp["max_grad_norm"])
                self.adam.step(policy.flat, grad, lr)
                policy.sync()

    def recent_return(self) -> Optional[float]:
        return float(np.mean(self.finished[-EVAL_EPISODES:])) if self.finished else None

    def close(self) -> None:
        self.envs.close()


def _train(steps, seed, n_envs, network, backend, dtype, progress, eval_episodes, echo, hyperparameters):
    trainer = Trainer(steps, seed, n_envs, network, backend, dtype, hyperparameters)
    policy = trainer.policy
    echo(f"backend: {policy.backend.spec}; CartPoleNoVel (CartPole-v1, velocities masked), {n_envs} envs, "
         f"{trainer.total:,} steps; network {network!r}: LSTM({policy.obs_size}, {policy.hidden}) actor and "
         f"critic, heads {policy.net_arch} {policy.activation}")
    curve = []
    bar = ProgressBar(trainer.total) if progress else None
    t0 = time.perf_counter()
    try:
        for it in range(trainer.iterations):
            trainer.collect()   # 1. act
            trainer.learn()     # 2. learn
            curve.append((trainer.timesteps, trainer.recent_return()))
            if bar:
                bar.update(trainer.timesteps, curve[-1][1])
    finally:
        if bar:
            bar.close()
        trainer.close()
    seconds = time.perf_counter() - t0
    returns = evaluate(policy, trainer.normalizer, eval_episodes, seed + 10_000)
    return dict(returns=returns, mean=float(returns.mean()), std=float(returns.std()), curve=curve,
                steps=trainer.timesteps, seconds=seconds, steps_per_second=trainer.timesteps / seconds,
                stats=trainer.stats, policy=policy, normalizer=trainer.normalizer)


def plot_curves(curves: Dict[str, list], path: str) -> bool:
    """A PNG of recent mean training return against steps, one line per curve; False without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, curve in curves.items():
        pts = [(s, r) for s, r in curve if r is not None]
        if pts:
            ax.plot(*zip(*pts), label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean return, last 20 training episodes")
    ax.set_title("Recurrent PPO on CartPoleNoVel-v1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet demo ppo", __doc__)
    parser.add_argument("--steps", type=int, default=ZOO_HYPERPARAMETERS["n_timesteps"],
                        help="environment steps, rounded up to whole rollouts (default: the zoo's 100000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training and its environments (default 0)")
    parser.add_argument("--envs", type=int, default=ZOO_HYPERPARAMETERS["n_envs"],
                        help="parallel environments (default: the zoo's 8)")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="zoo",
                        help="zoo: the zoo entry's policy_kwargs (default); sb3-default: MlpLstmPolicy's defaults")
    parser.add_argument("--backend", default=None, help="backend spec (default: automatic selection)")
    parser.add_argument("--plot", default=None, help="write the training curve to this PNG (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.envs < 1:
        parser.error("--steps and --envs must be at least 1")
    result = train(args.steps, args.seed, args.envs, args.network, backend=args.backend,
                   progress=not args.no_progress)
    print(f"trained {result['steps']:,} steps in {result['seconds']:.1f} s "
          f"({result['steps_per_second']:.0f} steps/s)")
    if args.plot:
        if plot_curves({"clnet": result["curve"]}, args.plot):
            print(f"training curve written to {args.plot}")
        else:
            print("no plot: matplotlib is not installed")
    print(f"final mean return: {result['mean']:.1f} +/- {result['std']:.1f} over {len(result['returns'])} episodes")
    return 0
