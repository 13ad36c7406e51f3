"""`lstmkit explain`: one step traced gate by gate, checked by hand on the articles' worked example
and against PyTorch's LSTM cell."""
import numpy as np
import pytest
import torch

from lstmkit.apps.explain import article_example, stack_gates, trace_step
from lstmkit.cli import main


def test_article_example_by_hand():
    # Row r of every W_k is [0.4 0.5 0.6 0.7] + 0.1 r and x sums to 1: W_k x = 0.6 + 0.1 r. Row r of
    # every U_k is [0.3 0.4 0.5 0.6] + 0.1 r and h = [0.5 0.6 0.7 0.8] sums to 2.6: U_k h = 1.22 +
    # 0.26 r. With b_k = 0.1 + 0.1 r, every gate's sum is z = 1.92 + 0.46 r; C_{t-1} = 0.
    x, h, W_gates, U_gates, b_gates = article_example()
    trace = trace_step(x, h, np.zeros(4), *stack_gates(W_gates, U_gates, b_gates))
    r = np.arange(4)
    z = 1.92 + 0.46 * r
    sig, cand = 1 / (1 + np.exp(-z)), np.tanh(z)
    for symbol, value in (("i_t", sig), ("f_t", sig), ("C~_t", cand), ("o_t", sig)):
        np.testing.assert_allclose(trace[symbol]["x W"], 0.6 + 0.1 * r, rtol=1e-14)
        np.testing.assert_allclose(trace[symbol]["h U"], 1.22 + 0.26 * r, rtol=1e-14)
        np.testing.assert_allclose(trace[symbol]["b"], 0.1 + 0.1 * r, rtol=1e-14)
        np.testing.assert_allclose(trace[symbol]["z"], z, rtol=1e-14)
        np.testing.assert_allclose(trace[symbol]["value"], value, rtol=1e-14)
    c = sig * cand                                  # f * 0 + i * C~
    np.testing.assert_allclose(trace["C_t"], c, rtol=1e-14)
    np.testing.assert_allclose(trace["tanh(C_t)"], np.tanh(c), rtol=1e-14)
    np.testing.assert_allclose(trace["h_t"], sig * np.tanh(c), rtol=1e-14)
    assert abs(trace["i_t"]["value"][0] - 0.8721384) < 1e-7 and abs(trace["h_t"][0] - 0.5960058) < 1e-7


def test_trace_matches_torch_lstm_cell():
    # Per-gate weights in the articles' orientation are PyTorch's rows of weight_ih / weight_hh.
    rng = np.random.default_rng(3)
    I, H = 3, 5
    W_gates = [rng.standard_normal((H, I)) for _ in range(4)]
    U_gates = [rng.standard_normal((H, H)) for _ in range(4)]
    b_gates = [rng.standard_normal(H) for _ in range(4)]
    x, h, c = rng.standard_normal(I), rng.standard_normal(H), rng.standard_normal(H)
    trace = trace_step(x, h, c, *stack_gates(W_gates, U_gates, b_gates))

    cell = torch.nn.LSTMCell(I, H).double()
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(np.vstack(W_gates)))
        cell.weight_hh.copy_(torch.from_numpy(np.vstack(U_gates)))
        cell.bias_ih.copy_(torch.from_numpy(np.concatenate(b_gates)))
        cell.bias_hh.zero_()
        xt, ht, ct = (torch.from_numpy(v)[None] for v in (x, h, c))
        h_new, c_new = cell(xt, (ht, ct))
        z = torch.nn.functional.linear(xt, cell.weight_ih, cell.bias_ih) + torch.nn.functional.linear(ht, cell.weight_hh)
    zi, zf, zg, zo = z[0].chunk(4)
    for symbol, zk, fn in (("i_t", zi, torch.sigmoid), ("f_t", zf, torch.sigmoid), ("C~_t", zg, torch.tanh),
                           ("o_t", zo, torch.sigmoid)):
        np.testing.assert_allclose(trace[symbol]["z"], zk.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(trace[symbol]["value"], fn(zk).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(trace["C_t"], c_new[0].numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(trace["h_t"], h_new[0].numpy(), rtol=1e-12, atol=1e-14)


def test_command_prints_every_value(capsys):
    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    for line in ("i_t = sigmoid(W_i x_t + U_i h_{t-1} + b_i)", "C~_t = tanh(W_c x_t + U_c h_{t-1} + b_c)",
                 "sum          = [ 1.92000  2.38000  2.84000  3.30000]",
                 "i_t          = [ 0.87214  0.91529  0.94480  0.96443]",
                 "h_t          = [ 0.59601  0.65551  0.69393  0.71858]", "C_{t-1} = 0"):
        assert line in out, line
    assert main(["explain", "--c", "1,0,-1,0.5"]) == 0      # C_t = f * C_{t-1} + i * C~ with f = i
    out = capsys.readouterr().out
    z = 1.92 + 0.46 * np.arange(4)
    sig = 1 / (1 + np.exp(-z))
    c = sig * np.array([1, 0, -1, 0.5]) + sig * np.tanh(z)
    assert "C_t          = [" + " ".join(f"{e:8.5f}" for e in c) + "]" in out


@pytest.mark.parametrize("args,message", [
    (["--x", "1,2"], "--x must be 4 comma-separated finite numbers, got '1,2'"),
    (["--h", "a,b,c,d"], "--h must be 4 comma-separated numbers, got 'a,b,c,d'"),
    (["--c", "1,2,3,nan"], "--c must be 4 comma-separated finite numbers")])
def test_command_rejects_bad_vectors(capsys, args, message):
    assert main(["explain", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lstmkit: error: ") and message in err
