"""Whole models against PyTorch in float64: the same weights give the same losses, gradients and,
after three optimizer steps (with gradient clipping), the same weights."""
import numpy as np
import pytest
import torch

from lstmkit import optim
from lstmkit.layers import LSTM, Dense, Embedding
from lstmkit.model import Sequential
from oracle import rel_error, to_numpy

TOL = 1e-9
V, E, H, B, T = 11, 5, 6, 4, 7


class TorchLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(V, E)
        self.lstm = torch.nn.LSTM(E, H, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(H, V)

    def forward(self, ids):
        return self.fc(self.lstm(self.emb(ids))[0])


class TorchRegressor(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.lstm = torch.nn.LSTM(features, H, batch_first=True)
        self.fc = torch.nn.Linear(H, 1)

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


def lstm_pairs(module, layers):
    """(torch parameter, lstmkit array, transpose?) pairs; b_hh is frozen at 0, b_ih carries the sum."""
    pairs = []
    for k, layer in enumerate(layers):
        getattr(module, f"bias_hh_l{k}").requires_grad_(False).zero_()
        pairs += [(getattr(module, f"weight_ih_l{k}"), layer.params["kernel"], True),
                  (getattr(module, f"weight_hh_l{k}"), layer.params["recurrent_kernel"], True),
                  (getattr(module, f"bias_ih_l{k}"), layer.params["bias"], False)]
    return pairs


def copy_into_torch(pairs):
    with torch.no_grad():
        for p, a, transpose in pairs:
            p.copy_(torch.from_numpy(a.T.copy() if transpose else a.copy()))


def compare(model, tmodel, pairs, x, y, loss_fn, ours_opt, torch_opt, clip):
    model.compile(ours_opt, model.loss)
    params = [p for p, _, _ in pairs]
    topt = torch_opt(params)
    tx = torch.from_numpy(x)
    ty = torch.from_numpy(y)
    grad_of = {id(a): name for name, a in model.trainable_params().items()}
    for step in range(3):
        loss = model.train_on_batch(x, y)
        topt.zero_grad()
        tloss = loss_fn(tmodel(tx), ty)
        tloss.backward()
        assert abs(loss - tloss.item()) <= TOL * max(1.0, abs(tloss.item())), step
        grads = model.gradients()
        for p, a, transpose in pairs:
            g = to_numpy(p.grad)
            assert rel_error(grads[grad_of[id(a)]], g.T if transpose else g) < TOL, (step, grad_of[id(a)])
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        topt.step()
    for p, a, transpose in pairs:
        t = to_numpy(p)
        assert rel_error(a, t.T if transpose else t) < TOL, grad_of[id(a)]
    if clip is not None:
        assert model.optimizer.last_grad_norm > clip      # the clipping did act


OPTIMIZERS = {
    "adam": (lambda: optim.Adam(0.05, epsilon=1e-8), lambda p: torch.optim.Adam(p, lr=0.05, eps=1e-8), None),
    "adamw+clip": (lambda: optim.AdamW(0.05, weight_decay=0.1, epsilon=1e-8, clipnorm=0.1),
                   lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1, eps=1e-8), 0.1),
    "sgd-nesterov+clip": (lambda: optim.SGD(0.3, momentum=0.9, nesterov=True, clipnorm=0.1),
                          lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9, nesterov=True), 0.1),
}


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_language_model_matches_torch(impl, opt):
    rng = np.random.default_rng(0)
    model = Sequential([Embedding(V, E, dtype="float64"),
                        LSTM(H, return_sequences=True, impl=impl, dtype="float64"),
                        LSTM(H, return_sequences=True, impl=impl, dtype="float64"),
                        Dense(V, dtype="float64")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.build((T,))
    tmodel = TorchLM().double()
    pairs = [(tmodel.emb.weight, model.layers[0].params["embeddings"], False)]
    pairs += lstm_pairs(tmodel.lstm, model.layers[1:3])
    pairs += [(tmodel.fc.weight, model.layers[3].params["kernel"], True),
              (tmodel.fc.bias, model.layers[3].params["bias"], False)]
    copy_into_torch(pairs)
    ids = rng.integers(0, V, (B, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    ce = torch.nn.CrossEntropyLoss()
    ours, theirs, clip = OPTIMIZERS[opt]
    compare(model, tmodel, pairs, x, y, lambda out, t: ce(out.reshape(-1, V), t.reshape(-1)),
            ours(), theirs, clip)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_regression_matches_torch(impl, opt):
    rng = np.random.default_rng(1)
    model = Sequential([LSTM(H, impl=impl, dtype="float64"), Dense(1, dtype="float64")], seed=0)
    model.compile("adam", "mse")
    model.build((T, 3))
    tmodel = TorchRegressor(3).double()
    pairs = lstm_pairs(tmodel.lstm, model.layers[:1])
    pairs += [(tmodel.fc.weight, model.layers[1].params["kernel"], True),
              (tmodel.fc.bias, model.layers[1].params["bias"], False)]
    copy_into_torch(pairs)
    x = rng.standard_normal((B, T, 3))
    y = rng.standard_normal((B, 1))
    ours, theirs, clip = OPTIMIZERS[opt]
    compare(model, tmodel, pairs, x, y, torch.nn.MSELoss(), ours(), theirs, clip)
