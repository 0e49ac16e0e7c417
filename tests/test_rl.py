"""clnet.rl.RecurrentRollout: storage and sequence minibatches checked against hand-built references."""
import numpy as np
import pytest

import clnet
from clnet.rl import RecurrentRollout

T, B, I, H = 12, 3, 2, 5


def _code(t, b):
    """A value that names its step and environment, so a wrong slice shows."""
    return 100.0 * t + b


def _filled(chunk_length, burn_in, resets=None):
    """A full rollout whose every stored number encodes (t, b); the state 'before step t' of env b
    is h = 1000 t + 10 b + j, c = -h (j the unit), stored through store_states."""
    ro = RecurrentRollout(T, B, I, {"actor": H, "critic": H}, chunk_length=chunk_length, burn_in=burn_in)
    resets = np.zeros((T, B), dtype=bool) if resets is None else resets
    for t in range(T):
        h = np.array([[1000.0 * t + 10 * b + j for j in range(H)] for b in range(B)])
        ro.store_states(actor=(h, -h), critic=(h + 0.5, -h - 0.5))
        codes = np.array([_code(t, b) for b in range(B)])
        ro.add(np.stack([codes, codes + 0.25], axis=1), resets[t], np.array([t * 10 + b for b in range(B)]),
               codes + 1, codes + 2, codes + 3)
    ro.compute_returns(np.zeros(B), np.zeros(B, dtype=bool), 0.5, 0.5)
    return ro


def _reference(chunk_length, burn_in, env, chunk):
    """Rows of one sequence written out by hand: (rollout steps or None for padding, loss mask,
    the step whose stored state starts it)."""
    S = burn_in + chunk_length
    first_loss = chunk * chunk_length
    begin = max(0, first_loss - burn_in)
    steps = list(range(begin, first_loss + chunk_length))
    rows = steps + [None] * (S - len(steps))
    mask = [1.0 if (s is not None and s >= first_loss) else 0.0 for s in rows]
    return rows, mask, begin


@pytest.mark.parametrize("chunk_length,burn_in", [(12, 0), (4, 0), (3, 0), (4, 2), (3, 3), (4, 8)])
def test_batch_slices_like_the_hand_built_reference(chunk_length, burn_in):
    ro = _filled(chunk_length, burn_in)
    n_chunks = T // chunk_length
    sequences = [e * n_chunks + k for e in range(B) for k in range(n_chunks)][::-1]
    batch = ro.batch(sequences)
    assert batch.obs.shape == (burn_in + chunk_length, len(sequences), I)
    for col, seq in enumerate(sequences):
        env, chunk = divmod(seq, n_chunks)
        rows, mask, begin = _reference(chunk_length, burn_in, env, chunk)
        assert batch.envs[col] == env and batch.chunks[col] == chunk and batch.starts[col] == begin
        for r, step in enumerate(rows):
            if step is None:
                assert batch.obs[r, col].tolist() == [0.0, 0.0] and batch.mask[r, col] == 0
                assert not batch.resets[r, col]
                continue
            code = _code(step, env)
            assert batch.obs[r, col].tolist() == [code, code + 0.25]
            assert batch.actions[r, col] == step * 10 + env
            assert batch.values[r, col] == code + 2 and batch.log_probs[r, col] == code + 3
            assert batch.mask[r, col] == mask[r]
        h, c = batch.initial_states["actor"]
        assert h[col].tolist() == [1000.0 * begin + 10 * env + j for j in range(H)]
        assert c[col].tolist() == [-(1000.0 * begin + 10 * env + j) for j in range(H)]
        assert batch.initial_states["critic"][0][col, 0] == 1000.0 * begin + 10 * env + 0.5
    # every step of the rollout carries loss in exactly one sequence
    covered = np.zeros((T, B))
    for col, seq in enumerate(sequences):
        for r in range(batch.mask.shape[0]):
            if batch.mask[r, col]:
                covered[batch.starts[col] + r, batch.envs[col]] += 1
    assert (covered == 1).all()


def test_gae_matches_a_scalar_loop():
    rng = np.random.default_rng(0)
    ro = RecurrentRollout(T, B, I, {"actor": H}, chunk_length=4)
    resets = rng.random((T, B)) < 0.2
    rewards, values = rng.normal(size=(T, B)), rng.normal(size=(T, B))
    for t in range(T):
        ro.store_states(actor=np.zeros((B, H)))
        ro.add(np.zeros((B, I)), resets[t], np.zeros(B, dtype=np.int64), rewards[t], values[t], np.zeros(B))
    last_value, last_reset, gamma, lam = rng.normal(size=B), np.array([True, False, False]), 0.9, 0.8
    ro.compute_returns(last_value, last_reset, gamma, lam)
    for b in range(B):
        acc = 0.0
        for t in range(T - 1, -1, -1):
            ended = last_reset[b] if t == T - 1 else resets[t + 1, b]
            nxt = last_value[b] if t == T - 1 else values[t + 1, b]
            delta = rewards[t, b] + (0.0 if ended else gamma * nxt) - values[t, b]
            acc = delta + (0.0 if ended else gamma * lam * acc)
            assert ro.advantages[t, b] == pytest.approx(acc)
            assert ro.returns[t, b] == pytest.approx(acc + values[t, b])


def test_minibatches_cover_every_sequence_once_per_epoch():
    ro = _filled(3, 0)
    batches = list(ro.minibatches(6, np.random.default_rng(1)))  # 2 sequences of 3 steps each
    assert [b.n_sequences for b in batches] == [2] * 6
    seen = sorted(int(e) * 4 + int(k) for b in batches for e, k in zip(b.envs, b.chunks))
    assert seen == list(range(B * 4))
    assert [b.n_sequences for b in ro.minibatches(1000, np.random.default_rng(1))] == [12]


def test_stored_sequences_replay_the_acting_steps_exactly():
    """The point of the stored states: each chunk re-run from its stored state with its resets
    gives the h that acting gave, with the state read from the device only at sequence starts."""
    rng = np.random.default_rng(2)
    cell = clnet.LSTMCell(I, H, seed=3)
    state = cell.initial_state(B)
    ro = RecurrentRollout(T, B, I, {"actor": H}, chunk_length=4, burn_in=2)
    acted, reads = [], []
    starts = np.ones(B, dtype=bool)
    for t in range(T):
        reads.append(ro.store_states(actor=state))
        obs = rng.normal(size=(B, I)).astype(np.float32)
        acted.append(cell.step(obs, state, reset=starts))
        ro.add(obs, starts, np.zeros(B, dtype=np.int64), np.zeros(B), np.zeros(B), np.zeros(B))
        starts = rng.random(B) < 0.2
    assert [t for t, r in enumerate(reads) if r] == [0, 2, 6]  # chunks at 0, 4, 8 with 2 burn-in steps
    ro.compute_returns(np.zeros(B), starts, 0.9, 0.9)
    batch = ro.batch(range(B * 3))
    replay = cell.initial_state(batch.n_sequences)
    replay.set(*batch.initial_states["actor"])
    hs = cell.sequence(batch.obs, replay, batch.resets)
    for col in range(batch.n_sequences):
        for r in range(batch.mask.shape[0]):
            step = batch.starts[col] + r
            if step < T and (batch.mask[r, col] or r < 2):
                np.testing.assert_allclose(hs[r, col], acted[step][batch.envs[col]], rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_refused_and_leave_the_rollout_unchanged():
    with pytest.raises(ValueError, match="chunk_length must divide"):
        RecurrentRollout(10, 2, 3, {"a": 4}, chunk_length=4)
    with pytest.raises(ValueError, match="burn_in must be at most"):
        RecurrentRollout(8, 2, 3, {"a": 4}, chunk_length=4, burn_in=5)
    with pytest.raises(TypeError, match="states must be"):
        RecurrentRollout(8, 2, 3, {})
    with pytest.raises(TypeError, match="n_steps must be an integer"):
        RecurrentRollout(8.0, 2, 3, {"a": 4})
    ro = RecurrentRollout(4, 2, 3, {"a": 4}, chunk_length=2)
    with pytest.raises(RuntimeError, match="call store_states"):
        ro.add(np.zeros((2, 3)), np.zeros(2), np.zeros(2, dtype=np.int64), np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="exactly the models"):
        ro.store_states(b=np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"h must have shape \(n_envs, hidden\)"):
        ro.store_states(a=np.zeros((3, 4)))
    ro.store_states(a=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="obs must have shape"):
        ro.add(np.zeros((2, 4)), np.zeros(2), np.zeros(2, dtype=np.int64), np.zeros(2), np.zeros(2), np.zeros(2))
    assert ro.step == 0
    with pytest.raises(RuntimeError, match="holds 0 of n_steps"):
        list(ro.minibatches(4, np.random.default_rng(0)))
    for _ in range(4):
        ro.store_states(a=np.zeros((2, 4)))
        ro.add(np.zeros((2, 3)), np.zeros(2), np.zeros(2, dtype=np.int64), np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(RuntimeError, match="compute_returns"):
        list(ro.minibatches(4, np.random.default_rng(0)))
    with pytest.raises(RuntimeError, match="already holds"):
        ro.store_states(a=np.zeros((2, 4)))
