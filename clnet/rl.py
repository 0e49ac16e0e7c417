"""Rollout storage for recurrent policies: what PPO (or any on-policy method) keeps of a
rollout to train an LSTM/GRU policy with backpropagation through time.

:class:`RecurrentRollout` stores ``n_steps`` steps of ``n_envs`` parallel environments:
observations, the reset flags given to ``cell.step`` (1 = a new episode started before this
step), actions, rewards, values and log-probabilities, plus the recurrent state of each named
model at the steps where a stored sequence begins. For learning it cuts the rollout into
sequences of ``chunk_length`` steps per environment ("chunks"), each starting from the state
that was stored when acting reached it, optionally preceded by ``burn_in`` steps that only warm
the state up, and hands out random minibatches of whole sequences, time-major, ready for
``cell.sequence`` / ``cell.backward_sequence``.

Only the states at sequence starts are read back from the device while acting (``state.h`` and
``state.c`` once per chunk), not at every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from ._validate import as_int
from .state import RecurrentState

__all__ = ["RecurrentRollout", "SequenceBatch"]


@dataclass
class SequenceBatch:
    """One minibatch of M stored sequences of S = burn_in + chunk_length steps, time-major.

    ``obs`` ``(S, M, *obs_shape)``, ``resets`` ``(S, M)`` (bool, pass to ``sequence`` /
    ``backward_sequence``), ``actions``, ``log_probs``, ``values``, ``advantages``,
    ``returns`` ``(S, M, ...)``, ``mask`` ``(S, M)`` float: 1 on the steps whose loss counts
    (the chunk's own steps), 0 on burn-in steps and on padding. ``initial_states`` maps each
    model's name to the stored ``(h, c)`` (``c`` is None for a GRU/RNN), each ``(M, H)``: the
    state before the sequence's first step. ``envs`` and ``starts`` ``(M,)`` say which
    environment and rollout step each sequence's first row is (``chunks`` the chunk index).
    """

    obs: np.ndarray
    resets: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray
    mask: np.ndarray
    initial_states: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]
    envs: np.ndarray
    starts: np.ndarray
    chunks: np.ndarray

    @property
    def n_sequences(self) -> int:
        return int(self.mask.shape[1])


class RecurrentRollout:
    """Storage of one rollout of a recurrent policy and its sequence minibatches.

    - ``n_steps``, ``n_envs``: the rollout is ``(n_steps, n_envs)``.
    - ``obs_shape``: shape of one observation (an int for a vector).
    - ``states``: mapping of model name to hidden size, e.g. ``{"actor": 64, "critic": 64}``.
    - ``chunk_length``: steps per stored sequence (default: ``n_steps``, one sequence per
      environment); must divide ``n_steps``.
    - ``burn_in``: steps before each chunk that are re-run only to warm the state up (mask 0,
      no loss). They are the chunk's preceding steps in this rollout, so the sequence then starts
      from the state stored ``burn_in`` steps before the chunk; the first chunks of the rollout
      have fewer (the first has none: its state is the rollout's stored initial state) and are
      padded at the end with masked steps so every sequence has ``burn_in + chunk_length`` rows.
      Gradients still flow backwards through burn-in steps (they are in the BPTT window, only
      their own loss is masked). ``0 <= burn_in <= n_steps - chunk_length``.
    - ``action_shape``, ``action_dtype``: one action (default: a discrete action, int64).

    Use: each rollout, ``clear()``; then per step, BEFORE stepping the cells,
    ``store_states(actor=actor_state, ...)`` (it reads the device only at steps where a
    sequence begins), then after the environment step ``add(obs, reset, action, reward, value,
    log_prob)``; at the end ``compute_returns(last_value, last_reset, gamma, gae_lambda)``, and
    ``minibatches(batch_size, rng)`` each epoch.
    """

    def __init__(self, n_steps, n_envs, obs_shape, states: Mapping[str, int], *, chunk_length=None,
                 burn_in=0, action_shape=(), action_dtype=np.int64):
        self.n_steps = as_int(n_steps, "n_steps", minimum=1)
        self.n_envs = as_int(n_envs, "n_envs", minimum=1)
        self.obs_shape = (as_int(obs_shape, "obs_shape", minimum=1),) if np.ndim(obs_shape) == 0 \
            else tuple(as_int(d, "obs_shape", minimum=1) for d in obs_shape)
        if not isinstance(states, Mapping) or not states:
            raise TypeError("states must be a non-empty mapping of model name to hidden size, "
                            "e.g. {'actor': 64, 'critic': 64}")
        self.hidden_sizes = {str(k): as_int(v, f"states[{k!r}]", minimum=1) for k, v in states.items()}
        self.chunk_length = self.n_steps if chunk_length is None else as_int(chunk_length, "chunk_length", minimum=1)
        if self.n_steps % self.chunk_length:
            raise ValueError(f"chunk_length must divide n_steps = {self.n_steps}, got {self.chunk_length}")
        self.burn_in = as_int(burn_in, "burn_in", minimum=0)
        if self.burn_in > self.n_steps - self.chunk_length:
            raise ValueError(f"burn_in must be at most n_steps - chunk_length = {self.n_steps - self.chunk_length} "
                             f"(burn-in steps are the chunk's preceding steps in the rollout), got {self.burn_in}")
        self.n_chunks = self.n_steps // self.chunk_length
        # The rollout steps where a stored sequence begins: chunk k starts at k*L - burn_in (>= 0).
        self.sequence_starts = np.maximum(np.arange(self.n_chunks) * self.chunk_length - self.burn_in, 0)
        T, B = self.n_steps, self.n_envs
        self.obs = np.zeros((T, B) + self.obs_shape, dtype=np.float32)
        self.resets = np.zeros((T, B), dtype=bool)
        self.actions = np.zeros((T, B) + tuple(action_shape), dtype=action_dtype)
        self.rewards = np.zeros((T, B))
        self.values = np.zeros((T, B))
        self.log_probs = np.zeros((T, B))
        self.advantages = np.zeros((T, B))
        self.returns = np.zeros((T, B))
        # State before step t, kept only for the t in sequence_starts: name -> {t: (h, c)}
        self._states: Dict[str, Dict[int, Tuple[np.ndarray, Optional[np.ndarray]]]] = {}
        self.clear()

    # -- filling ------------------------------------------------------------------------------
    def clear(self) -> None:
        """Start a new rollout (the arrays are overwritten as steps are added)."""
        self.step = 0
        self._states = {name: {} for name in self.hidden_sizes}
        self._have_returns = False

    @property
    def full(self) -> bool:
        return self.step == self.n_steps

    def store_states(self, **states) -> bool:
        """Keep each model's state before the current step if a stored sequence begins here.

        Call it before stepping the cells, with every model named in ``states`` as a
        :class:`~clnet.RecurrentState` or ``(h, c)`` arrays (``h`` alone for a GRU/RNN).
        Returns whether anything was read (only at sequence starts; elsewhere nothing moves).
        """
        if self.full:
            raise RuntimeError(f"the rollout already holds n_steps = {self.n_steps} steps; call clear() first")
        if set(states) != set(self.hidden_sizes):
            raise ValueError(f"store_states needs exactly the models {sorted(self.hidden_sizes)}, "
                             f"got {sorted(states)}")
        if self.step not in self.sequence_starts:
            return False
        read = {}
        for name, value in states.items():
            H = self.hidden_sizes[name]
            if isinstance(value, RecurrentState):
                h, c = value.h, (value.c if value.cell.kind == "lstm" else None)
            elif isinstance(value, (tuple, list)) and len(value) == 2:
                h, c = value
            else:
                h, c = value, None
            h = np.array(h, dtype=np.float32, copy=True)
            c = None if c is None else np.array(c, dtype=np.float32, copy=True)
            for label, arr in (("h", h), ("c", c)):
                if arr is not None and arr.shape != (self.n_envs, H):
                    raise ValueError(f"state {name!r} {label} must have shape (n_envs, hidden) = "
                                     f"{(self.n_envs, H)}, got {arr.shape}")
            read[name] = (h, c)
        for name, hc in read.items():
            self._states[name][self.step] = hc
        return True

    def add(self, obs, reset, action, reward, value, log_prob) -> None:
        """Store one step: the observation and reset flags given to ``step``, the action taken,
        the reward received, the value estimate and the action's log-probability (each ``n_envs``)."""
        if self.full:
            raise RuntimeError(f"the rollout already holds n_steps = {self.n_steps} steps; call clear() first")
        t = self.step
        if t in self.sequence_starts and any(t not in kept for kept in self._states.values()):
            raise RuntimeError(f"a stored sequence begins at step {t}: call store_states(...) before "
                               f"stepping the cells, then add()")
        B = self.n_envs
        checked = {}
        for name, v, shape in (("obs", obs, (B,) + self.obs_shape), ("reset", reset, (B,)),
                               ("action", action, (B,) + self.actions.shape[2:]), ("reward", reward, (B,)),
                               ("value", value, (B,)), ("log_prob", log_prob, (B,))):
            arr = np.asarray(v)
            if arr.shape != shape:
                raise ValueError(f"{name} must have shape {shape} (one per environment), got {arr.shape}")
            checked[name] = arr
        self.obs[t] = checked["obs"]
        self.resets[t] = checked["reset"].astype(bool)
        self.actions[t] = checked["action"]
        self.rewards[t] = checked["reward"]
        self.values[t] = checked["value"]
        self.log_probs[t] = checked["log_prob"]
        self.step += 1
        self._have_returns = False

    def compute_returns(self, last_value, last_reset, gamma: float, gae_lambda: float) -> None:
        """Generalised advantage estimation over the stored rollout.

        ``last_value`` ``(n_envs,)`` is the value of the observation after the last step and
        ``last_reset`` whether a new episode starts there (the reset flags of the next step).
        An episode ends after step t where ``resets[t + 1]`` is set: no bootstrap across it.
        Fills ``advantages`` and ``returns = advantages + values``.
        """
        if not self.full:
            raise RuntimeError(f"the rollout holds {self.step} of n_steps = {self.n_steps} steps")
        last_value = np.asarray(last_value, dtype=np.float64)
        last_reset = np.asarray(last_reset)
        if last_value.shape != (self.n_envs,) or last_reset.shape != (self.n_envs,):
            raise ValueError(f"last_value and last_reset must have shape ({self.n_envs},), got "
                             f"{last_value.shape} and {last_reset.shape}")
        continues = np.concatenate([1.0 - self.resets[1:], (1.0 - last_reset.astype(bool))[None]])
        next_values = np.concatenate([self.values[1:], last_value[None]])
        gae = np.zeros(self.n_envs)
        for t in reversed(range(self.n_steps)):  # a recurrence in t, vectorised over environments
            delta = self.rewards[t] + gamma * next_values[t] * continues[t] - self.values[t]
            gae = delta + gamma * gae_lambda * continues[t] * gae
            self.advantages[t] = gae
        self.returns[:] = self.advantages + self.values
        self._have_returns = True

    # -- learning -----------------------------------------------------------------------------
    def sequence_rows(self) -> Tuple[np.ndarray, np.ndarray]:
        """For every chunk k: the rollout step of each of its S rows (-1 = padding) ``(n_chunks, S)``
        and the loss mask of those rows ``(n_chunks, S)``."""
        L, n, S = self.chunk_length, self.burn_in, self.burn_in + self.chunk_length
        rows = np.full((self.n_chunks, S), -1, dtype=np.int64)
        mask = np.zeros((self.n_chunks, S))
        for k in range(self.n_chunks):  # n_chunks is small (a few per rollout)
            begin, chunk = int(self.sequence_starts[k]), k * L
            steps = np.arange(begin, chunk + L)
            rows[k, :len(steps)] = steps
            mask[k, chunk - begin:len(steps)] = 1.0
        return rows, mask

    def minibatches(self, batch_size, rng: np.random.Generator) -> Iterator[SequenceBatch]:
        """One epoch: every (environment, chunk) sequence once, in random order, in minibatches of
        ``batch_size // chunk_length`` sequences (at least one; the last may be smaller)."""
        if not self.full:
            raise RuntimeError(f"the rollout holds {self.step} of n_steps = {self.n_steps} steps")
        if not self._have_returns:
            raise RuntimeError("call compute_returns(...) before minibatches()")
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        per_batch = max(1, batch_size // self.chunk_length)
        order = rng.permutation(self.n_envs * self.n_chunks)
        for first in range(0, len(order), per_batch):
            yield self.batch(order[first:first + per_batch])

    def batch(self, sequences) -> SequenceBatch:
        """The minibatch of the given sequence indices (``env * n_chunks + chunk``)."""
        seq = np.asarray(sequences, dtype=np.int64)
        envs, chunks = seq // self.n_chunks, seq % self.n_chunks
        rows, mask = self.sequence_rows()
        r = rows[chunks].T                           # (S, M) rollout step per row
        m = mask[chunks].T
        valid = r >= 0
        t = np.where(valid, r, 0)                    # padded rows read step 0; their mask is 0
        e = np.broadcast_to(envs, r.shape)
        starts = self.sequence_starts[chunks]

        def take(a):
            out = a[t, e]
            out[~valid] = 0
            return out

        resets = take(self.resets)
        initial = {}
        for name, kept in self._states.items():
            h = np.stack([kept[int(s)][0][b] for s, b in zip(starts, envs)])
            c0 = [kept[int(s)][1] for s in starts]
            c = None if c0[0] is None else np.stack([cc[b] for cc, b in zip(c0, envs)])
            initial[name] = (h, c)
        return SequenceBatch(obs=take(self.obs), resets=resets, actions=take(self.actions),
                             log_probs=take(self.log_probs), values=take(self.values),
                             advantages=take(self.advantages), returns=take(self.returns), mask=m,
                             initial_states=initial, envs=envs, starts=starts, chunks=chunks)
