"""Optimizer steps against torch.optim on the same float64 numbers; clipping and schedules."""
import json
import math

import numpy as np
import pytest
import torch

from lstmkit import optim
from oracle import rel_error

SHAPES = {"W": (3, 4), "b": (4,)}


def run_both(ours, make_torch, steps=5, clip=None, seed=0):
    """Apply `steps` updates with fixed random gradients through lstmkit and torch."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    topt = make_torch(list(tparams.values()))
    for _ in range(steps):
        grads = {k: rng.standard_normal(s) * 3 for k, s in SHAPES.items()}
        ours.apply(params, grads)
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(tparams.values()), clip)
        topt.step()
    for k in SHAPES:
        assert rel_error(params[k], tparams[k].detach().numpy()) < 1e-12, k
    return ours


CASES = [
    (lambda: optim.SGD(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda: optim.SGD(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (lambda: optim.RMSprop(0.01, rho=0.9, epsilon=1e-8), lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8)),
    (lambda: optim.RMSprop(0.01, rho=0.99, epsilon=1e-8, momentum=0.5, centered=True, weight_decay=0.1),
     lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.5, centered=True, weight_decay=0.1)),
    (lambda: optim.Adam(0.01, epsilon=1e-8), lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8)),
    (lambda: optim.Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6, weight_decay=0.05),
     lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    (lambda: optim.AdamW(0.01, weight_decay=0.1, epsilon=1e-8),
     lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, eps=1e-8)),
]


@pytest.mark.parametrize("k", range(len(CASES)))
def test_matches_torch(k):
    ours, theirs = CASES[k]
    run_both(ours(), theirs)


def test_clipnorm_matches_clip_grad_norm():
    run_both(optim.Adam(0.01, epsilon=1e-8, clipnorm=0.5), lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8), clip=0.5)
    run_both(optim.SGD(0.1, momentum=0.9, clipnorm=100.0), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), clip=100.0)


def test_clipvalue():
    params = {"w": np.zeros(3)}
    optim.SGD(1.0, clipvalue=0.5).apply(params, {"w": np.array([-2.0, 0.1, 3.0])})
    assert np.allclose(params["w"], [0.5, -0.1, -0.5])


def test_schedules():
    s = optim.StepDecay(1.0, decay_steps=10, decay_rate=0.5)
    assert [s(0), s(9), s(10), s(25)] == [1.0, 1.0, 0.5, 0.25]
    e = optim.ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5)
    assert math.isclose(e(50), 0.1 * 0.5 ** 0.5)
    assert optim.ExponentialDecay(0.1, 100, 0.5, staircase=True)(150) == 0.05
    c = optim.CosineDecay(0.0, decay_steps=100, alpha=0.1, warmup_target=1.0, warmup_steps=10)
    assert c(0) == 0.0 and math.isclose(c(5), 0.5) and math.isclose(c(10), 1.0)
    assert math.isclose(c(60), 0.1 + 0.9 * 0.5) and math.isclose(c(500), 0.1)
    # Schedules are evaluated at the step count before each update, like Keras.
    opt = optim.SGD(s)
    params = {"w": np.zeros(1)}
    for _ in range(12):
        opt.apply(params, {"w": np.ones(1)})
    assert np.isclose(params["w"][0], -(10 * 1.0 + 2 * 0.5))
    # ...and match torch's StepLR stepping once per update.
    w = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([w], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(topt, step_size=10, gamma=0.5)
    for _ in range(12):
        w.grad = torch.ones(1)
        topt.step()
        sched.step()
    assert np.isclose(w.item(), params["w"][0])


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    grads = [{"w": rng.standard_normal(4)} for _ in range(6)]
    a = optim.get({"class_name": "Adam", "config": {"learning_rate": {"class_name": "CosineDecay",
                   "config": {"initial_learning_rate": 0.1, "decay_steps": 10}}}})
    pa = {"w": np.ones(4)}
    for g in grads[:3]:
        a.apply(pa, g)
    arrays, meta = a.get_state()
    config = json.loads(json.dumps(a.get_config()))
    b = optim.get(config)
    b.set_state(arrays, json.loads(json.dumps(meta)))
    pb = {"w": pa["w"].copy()}
    for g in grads[3:]:
        a.apply(pa, g)
        b.apply(pb, g)
    assert np.array_equal(pa["w"], pb["w"])


def test_errors():
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get("adagrad")
    with pytest.raises(ValueError, match="learning_rate"):
        optim.Adam(-1)
    with pytest.raises(ValueError, match="no gradient"):
        optim.SGD().apply({"w": np.zeros(2)}, {})
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(nesterov=True)
