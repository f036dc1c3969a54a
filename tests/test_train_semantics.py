"""What the trainer is for, observed from outside (a forward hook, see train_spy.py): the step
sees the exact next-token distributions, clipping bounds the update, the weight EMA is the
hand-computed average, resume continues from the checkpoint, the periodic evaluation scores the
right positions, and training reaches near-optimal loss."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.model import build_model  # noqa: E402
from compmech.train import TrainConfig, evaluate, train  # noqa: E402
from reference import next_token_dist, ref_beliefs, ref_myopic_entropy, ref_stationary  # noqa: E402
from train_spy import TrainSpy  # noqa: E402

TINY_MODEL = {"n_layers": 1, "d_model": 16, "d_head": 4, "d_mlp": 32}


def cfg_for(steps, **kw):
    base = dict(ctx=4, batch_size=32, lr=1e-2, log_every=5, snapshots=0, threads=1, model=dict(TINY_MODEL),
                warmup=0.0, targets="distribution")
    base.update(kw)
    base["tokens"] = steps * base["batch_size"] * base["ctx"]
    return TrainConfig(**base)


def exact_targets(proc, x, bos):
    """Next-token distribution after every input prefix, from the reference (B, L, V)."""
    x = x.numpy().astype(np.int64)
    T = proc.T
    if bos:
        b = ref_beliefs(T, x[:, 1:])[0] if x.shape[1] > 1 else np.zeros((x.shape[0], 0, T.shape[1]))
        pi = np.broadcast_to(ref_stationary(T), (x.shape[0], 1, T.shape[1]))
        b = np.concatenate([pi, b], 1)
    else:
        b = ref_beliefs(T, x)[0]
    return next_token_dist(T, b)


@pytest.mark.parametrize("data,bos", [("exact", False), ("stream", True)])
def test_distribution_targets_are_the_exact_next_token_distributions(data, bos):
    cfg = cfg_for(3, data=data, bos=bos)
    with TrainSpy() as spy:
        train(cfg, None, progress=False, final_eval=False)
    assert len(spy.steps) == 3
    proc = cfg.make_process()
    for i in range(3):
        x, q = spy.steps[i]["x"], spy.targets(i).numpy()
        if bos:
            assert np.all(x[:, 0].numpy() == proc.vocab_size)
        np.testing.assert_allclose(q, exact_targets(proc, x, bos), atol=2e-5)
    # the batches are not all the same
    assert not torch.equal(spy.steps[0]["x"], spy.steps[1]["x"])


def test_token_targets_are_the_next_input_tokens():
    cfg = cfg_for(2, targets="tokens")
    with TrainSpy() as spy:
        train(cfg, None, progress=False, final_eval=False)
    q = spy.targets(0).numpy()
    onehot = np.isclose(q, 1, atol=1e-4)
    assert np.all(onehot.sum(-1) == 1) and np.allclose(q[~onehot], 0, atol=1e-4)
    x = spy.steps[0]["x"].numpy()
    np.testing.assert_array_equal(q.argmax(-1)[:, :-1], x[:, 1:])  # target at t is input t+1


def _grad_at(cfg, params, x, q):
    model = build_model(cfg.model_config())
    with torch.no_grad():
        for p, v in zip(model.parameters(), params):
            p.copy_(v)
    loss = -(q.float() * torch.log_softmax(model(x), -1)).sum(-1).mean()
    return torch.autograd.grad(loss, list(model.parameters()))


def test_one_sgd_step_is_the_clipped_gradient_step():
    lr, clip = 0.5, 1e-3
    cfg = cfg_for(1, optimizer="sgd", momentum=0.0, lr=lr, grad_clip=clip, schedule="constant")
    with TrainSpy() as spy:
        res = train(cfg, None, progress=False, final_eval=False)
    rec = spy.steps[0]
    g = _grad_at(cfg, rec["params"], rec["x"], spy.targets(0))
    norm = torch.sqrt(sum((v.double() ** 2).sum() for v in g)).item()
    assert norm > 20 * clip  # clipping is active and matters
    after = list(res.model.parameters())
    step = torch.sqrt(sum(((a.detach() - b).double() ** 2).sum() for a, b in zip(after, rec["params"]))).item()
    assert step == pytest.approx(lr * clip, rel=1e-3)  # |update| = lr * max_norm, not lr * |g|
    for a, b, gi in zip(after, rec["params"], g):
        np.testing.assert_allclose(a.detach().numpy(), (b - lr * clip / norm * gi).numpy(), rtol=1e-4, atol=1e-8)


def test_unclipped_sgd_step_is_the_full_gradient_step():
    lr = 0.05
    cfg = cfg_for(1, optimizer="sgd", momentum=0.0, lr=lr, grad_clip=0.0, schedule="constant")
    with TrainSpy() as spy:
        res = train(cfg, None, progress=False, final_eval=False)
    rec = spy.steps[0]
    g = _grad_at(cfg, rec["params"], rec["x"], spy.targets(0))
    for a, b, gi in zip(res.model.parameters(), rec["params"], g):
        np.testing.assert_allclose(a.detach().numpy(), (b - lr * gi).numpy(), rtol=1e-4, atol=1e-8)


def test_weight_ema_is_the_hand_computed_average():
    steps, decay = 6, 0.8
    plain = train(cfg_for(steps), None, progress=False, final_eval=False)
    with TrainSpy() as spy:
        avg = train(cfg_for(steps, ema=decay), None, progress=False, final_eval=False)
    assert len(spy.steps) == steps
    live = [rec["params"] for rec in spy.steps] + [[p.detach() for p in plain.model.parameters()]]
    e = [p.double() for p in live[0]]  # the average starts at the initial weights
    for t in range(steps):
        d = min(decay, (1 + t) / (10 + t))  # documented warm-up of the decay
        e = [d * a + (1 - d) * b.double() for a, b in zip(e, live[t + 1])]
    got = list(avg.model.parameters())
    for a, b in zip(got, e):
        np.testing.assert_allclose(a.detach().double().numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    # and the average is not simply the live weights
    assert max((a.detach() - b).abs().max().item() for a, b in zip(got, live[-1])) > 1e-4


def test_resume_continues_from_the_checkpoint(tmp_path):
    cfg = cfg_for(8, save_every=1)
    part = train(cfg, tmp_path, progress=False, stop_at_step=3, final_eval=False)
    with TrainSpy() as spy:
        resumed = train(cfg, tmp_path, resume=True, progress=False, final_eval=False)
    assert len(spy.steps) == 8 - 3  # only the remaining steps are trained
    for a, b in zip(spy.steps[0]["params"], part.model.parameters()):
        assert torch.equal(a, b.detach())  # starting from the interrupted run's weights
    full = train(cfg, None, progress=False, final_eval=False)
    for a, b in zip(resumed.model.parameters(), full.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = cfg_for(150, batch_size=64, eval_every=50, eval_sequences=4096)
    proc = cfg.make_process()
    torch.manual_seed(cfg.seed)
    before = evaluate(build_model(cfg.model_config(proc)), proc, ctx=cfg.ctx)
    res = train(cfg, tmp_path_factory.mktemp("trained"), progress=False)
    return cfg, proc, before, res


def test_trained_model_beats_its_initialisation_and_is_near_optimal(trained):
    cfg, proc, before, res = trained
    after = res.final["eval"]
    # position t has seen t + 1 tokens: its optimum is h_mu(t + 2), in nats
    opt = ref_myopic_entropy(proc.T, cfg.ctx + 1)[1:] * np.log(2)
    np.testing.assert_allclose(after["optimal"], opt, atol=1e-10)
    excess_before = np.asarray(before["loss"]) - opt
    excess_after = np.asarray(after["loss"]) - opt
    assert excess_before.mean() > 0.1  # an untrained model is far from optimal
    assert excess_after.mean() < 0.03 * excess_before.mean()
    assert after["worst_ratio"] < 1.01 and min(after["ratio"]) >= 1 - 1e-9


def test_periodic_evaluation_scores_each_position_against_its_own_targets(trained):
    cfg, proc, _, res = trained
    rows = [r for r in res.history if "eval_loss" in r]
    assert [r["step"] for r in rows] == [50, 100, 150]
    last = rows[-1]
    loss, ratio = np.asarray(last["eval_loss"]), np.asarray(last["eval_ratio"])
    # the sampled evaluation's optimum is the myopic entropy at each position (sampling error
    # of 4096 rows: ~0.005 nats), and the final model's loss there matches the exact evaluation
    opt = ref_myopic_entropy(proc.T, cfg.ctx + 1)[1:] * np.log(2)
    np.testing.assert_allclose(loss / ratio, opt, atol=0.02)
    se = np.asarray(last["eval_ratio_se"])  # an estimate on sampled rows carries its error
    assert np.all((se > 0) & (se < 0.01)) and len(last["eval_loss_se"]) == cfg.ctx
    np.testing.assert_allclose(loss, res.final["eval"]["loss"], atol=0.02)
    assert np.all(ratio > 1 - 0.01)
