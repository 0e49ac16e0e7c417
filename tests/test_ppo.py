"""The recurrent PPO demo (clnet/demos/ppo.py): its gradients against torch.autograd on the same
rollout, and a short training run that must rise well above a random policy."""
import numpy as np
import pytest

pytest.importorskip("gymnasium")
from clnet.demos import ppo  # noqa: E402


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with ppo._single_threaded_blas():  # as the demo's train() runs (tiny matrices)
        yield


def _float64_or_skip(backend):
    try:
        backend.check_dtype(np.float64)
    except Exception as exc:  # a device without doubles compares in float32 below
        return None, exc
    return np.float64, None


def _torch_loss_gradients(policy, batch, clip_range, vf_coef, ent_coef):
    """The same loss written the way sb3-contrib writes it, differentiated by torch.autograd:
    torch.nn.LSTMCell stepped with h * (1 - episode_start), Categorical distributions, torch.min."""
    torch = pytest.importorskip("torch")
    f64 = torch.float64
    P = {k: torch.tensor(v, dtype=f64, requires_grad=True) for k, v in policy.params.items()}
    act = torch.relu if policy.activation == "relu" else torch.tanh
    xs = torch.tensor(batch.obs, dtype=f64)
    keep = 1.0 - torch.tensor(batch.resets, dtype=f64)[..., None]
    S, M = batch.mask.shape

    def run(name):
        cell = torch.nn.LSTMCell(policy.obs_size, policy.hidden).double()
        # the stored state is the fused cell's: the actor's units first, then the critic's
        part = slice(0, policy.hidden) if name == "actor" else slice(policy.hidden, 2 * policy.hidden)
        h = torch.tensor(batch.initial_states["policy"][0][:, part], dtype=f64)
        c = torch.tensor(batch.initial_states["policy"][1][:, part], dtype=f64)
        weights = {k: P[f"{name}.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        outs = []
        for t in range(S):
            h, c = torch.func.functional_call(cell, weights, (xs[t], (h * keep[t], c * keep[t])))
            outs.append(h)
        return torch.stack(outs).reshape(S * M, -1)

    def tower(prefix, out, x):
        for i in range(len(policy.net_arch)):
            x = act(x @ P[f"{prefix}.{i}.w"] + P[f"{prefix}.{i}.b"])
        return x @ P[out + ".w"] + P[out + ".b"]

    mask = torch.tensor(batch.mask.reshape(-1) > 0)
    dist = torch.distributions.Categorical(logits=tower("pi", "action", run("actor")))
    values = tower("vf", "value", run("critic"))[:, 0]
    actions = torch.tensor(batch.actions.reshape(-1))
    log_prob = dist.log_prob(actions)
    adv = torch.tensor(batch.advantages.reshape(-1), dtype=f64)
    adv = (adv - adv[mask].mean()) / (adv[mask].std() + 1e-8)
    ratio = torch.exp(log_prob - torch.tensor(batch.log_probs.reshape(-1), dtype=f64))
    policy_loss = -torch.mean(torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))[mask])
    value_loss = torch.mean(((torch.tensor(batch.returns.reshape(-1), dtype=f64) - values) ** 2)[mask])
    entropy_loss = -torch.mean(dist.entropy()[mask])
    loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
    loss.backward()
    return {k: v.grad.numpy() for k, v in P.items()}, float(loss.detach())


# ("zoo", 0.01) covers every term of the loss, the demo's ent_coef = 0 included as a special case.
# float32 is the demo's default (parameters, heads and Adam in the cells' dtype); float64 where the
# device has it checks the same code to 1e-8.
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("network,ent_coef", [("zoo", 0.01), ("sb3-default", 0.0)])
def test_gradients_equal_torch_autograd_on_the_same_rollout(any_backend, network, ent_coef, precision):
    dtype, _ = _float64_or_skip(any_backend) if precision == "float64" else (None, None)
    # two epochs per update instead of the zoo's 20 keep the test short; the gradient is the same code
    trainer = ppo.Trainer(4096, seed=3, network=network, backend=any_backend, dtype=dtype,
                          hyperparameters={"n_epochs": 2, "ent_coef": ent_coef})
    try:
        trainer.collect()
        trainer.learn()      # moves the policy away from the one that acted: ratios differ from 1
        trainer.collect()    # a second rollout, with resets in the middle and stored initial states
    finally:
        trainer.close()
    assert trainer.rollout.resets[1:].any(), "the rollout should contain episode starts"
    # the second rollout starts from the state the first left: stored, not zero
    assert np.abs(trainer.rollout.batch([0]).initial_states["policy"][0]).sum() > 0
    policy = trainer.policy
    assert policy.flat.dtype == (np.float64 if dtype else np.float32)
    assert trainer.adam.m.dtype == policy.flat.dtype
    H = policy.hidden
    cross = policy.fused.state_dict()["weight_hh"].reshape(4, 2 * H, 2 * H)
    assert not cross[:, :H, H:].any() and not cross[:, H:, :H].any(), "actor and critic must stay separate"
    trainer.learn()  # the policy moves away from the one that collected this rollout
    batch = trainer.rollout.batch(range(trainer.rollout.n_envs))
    clip = 0.002     # small enough that both branches of the clipped surrogate occur
    grads, stats = ppo.ppo_gradients(policy, batch, clip, vf_coef=0.5, ent_coef=ent_coef)
    assert 0 < stats["clip_fraction"] < 1, "the check should cover clipped steps"
    expected, loss = _torch_loss_gradients(policy, batch, clip, 0.5, ent_coef)
    assert stats["loss"] == pytest.approx(loss, rel=1e-9 if dtype else 1e-4, abs=1e-9 if dtype else 1e-5)
    assert set(grads) == set(expected)
    for k, want in expected.items():
        scale = np.abs(want).max() + 1e-12
        tol = 1e-8 if dtype else 2e-3
        np.testing.assert_allclose(grads[k], want, rtol=0, atol=tol * scale, err_msg=k)


def _random_policy_return(episodes, seed):
    envs = ppo.make_envs(episodes)
    rng = np.random.default_rng(seed)
    envs.reset(seed=seed)
    totals, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not finished.all():
        _, reward, terminated, truncated, _ = envs.step(rng.integers(0, 2, size=episodes))
        totals += np.where(finished, 0.0, reward)
        finished |= terminated | truncated
    envs.close()
    return totals.mean()


def test_a_short_training_rises_well_above_a_random_policy():
    random_return = _random_policy_return(20, 10_000)
    assert 10 < random_return < 40  # CartPole: about 22 for uniformly random actions
    result = ppo.train(10_240, seed=0, progress=False, echo=lambda *a: None)
    assert result["steps"] == 10_240
    assert result["mean"] > 3 * random_return, (result["mean"], random_return)


def test_command_line_prints_the_final_line(capsys):
    from clnet.__main__ import main

    assert main(["demo", "ppo", "--steps", "256", "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("final mean return: ") and last.endswith(" over 20 episodes")
    with pytest.raises(SystemExit):
        main(["demo", "ppo", "--steps", "0"])


def test_bench_prints_both_and_the_speed_up(capsys):
    pytest.importorskip("sb3_contrib")
    from clnet.__main__ import main

    assert main(["bench", "ppo", "--steps", "256", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("sb3-contrib RecurrentPPO") and "steps/s" in line for line in out)
    assert any(line.startswith("clnet PPO") and "final mean return" in line for line in out)
    import re
    assert re.fullmatch(r"speed-up over sb3-contrib: \d+\.\dx", out[-1]), out[-1]


def test_normalisation_equals_sb3_vecnormalize():
    """The zoo's "normalize: True" is VecNormalize(gamma=0.98): observations and rewards. The
    demo's two normalisers against sb3's on the same seeded environments and random actions."""
    pytest.importorskip("stable_baselines3")
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    n, gamma = 4, ppo.ZOO_HYPERPARAMETERS["gamma"]
    wrapper = ppo._mask_velocity_wrapper()
    theirs = VecNormalize(DummyVecEnv([lambda: wrapper(gym.make("CartPole-v1"))] * n), gamma=gamma)
    theirs.seed(5)
    their_obs = theirs.reset()
    envs = ppo.make_envs(n)
    raw, _ = envs.reset(seed=5)
    obs_norm, reward_norm = ppo.ObservationNormalizer(raw.shape[1]), ppo.RewardNormalizer(n, gamma)
    obs_norm.update(raw)
    np.testing.assert_allclose(obs_norm(raw), their_obs, rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(0)
    episodes = 0
    try:
        for _ in range(200):
            actions = rng.integers(0, 2, size=n)
            their_obs, their_reward, their_done, _ = theirs.step(actions)
            raw, reward, terminated, truncated, _ = envs.step(actions)
            done = terminated | truncated
            np.testing.assert_array_equal(done, their_done)
            obs_norm.update(raw)
            np.testing.assert_allclose(obs_norm(raw), their_obs, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(reward_norm(reward.astype(np.float64), done), their_reward, rtol=1e-6)
            episodes += int(done.sum())
    finally:
        envs.close()
        theirs.close()
    assert episodes > 10  # returns were zeroed at many episode ends
    assert not np.allclose(their_reward, 1.0)  # the rewards were scaled, not passed through


@pytest.mark.parametrize("chunk", [None, 64])  # 64: five chunks, the last one short
def test_adam_equals_torch_optim_adam(chunk):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    start = rng.normal(size=300)
    ours, adam = start.copy(), ppo.Adam(start.size, eps=1e-5)
    if chunk:
        adam.CHUNK = chunk
    theirs = torch.tensor(start, requires_grad=True)
    opt = torch.optim.Adam([theirs], lr=1e-3, eps=1e-5)
    for step in range(5):
        grad = rng.normal(size=start.size) * 10.0 ** (step - 2)
        lr = 1e-3 * (1 - step / 5)     # the demo's decayed learning rate, given per step
        adam.step(ours, grad, lr)
        for group in opt.param_groups:
            group["lr"] = lr
        theirs.grad = torch.tensor(grad)
        opt.step()
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12, atol=1e-15)
    assert not np.allclose(ours, start)
