"""Shared test helpers: finite differences in float64 and conversion to and from PyTorch's layout."""
import numpy as np
import torch


def numerical_grad(f, arr, eps=1e-5):
    """Central-difference gradient of the scalar f() with respect to arr (perturbed in place)."""
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        up = f()
        flat[k] = old - eps
        down = f()
        flat[k] = old
        gflat[k] = (up - down) / (2 * eps)
    return grad


def rel_error(a, b):
    """Max relative error, scaled by the larger magnitude (with a floor of 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(a)), np.max(np.abs(b))))


def to_numpy(t):
    return t.detach().cpu().numpy()


def torch_dtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def rnn_weights_from_torch(module, layer=0, sum_biases=True):
    """W (I, G*H), U (H, G*H) and bias from a torch.nn.LSTM/GRU/RNN layer (transposed)."""
    W = to_numpy(getattr(module, f"weight_ih_l{layer}")).T.copy()
    U = to_numpy(getattr(module, f"weight_hh_l{layer}")).T.copy()
    b_ih = to_numpy(getattr(module, f"bias_ih_l{layer}"))
    b_hh = to_numpy(getattr(module, f"bias_hh_l{layer}"))
    if sum_biases:
        return W, U, b_ih + b_hh
    return W, U, np.stack([b_ih, b_hh])


def torch_grads(module, layer=0, sum_biases=True):
    """Gradients of a torch RNN layer in lstmkit's layout."""
    dW = to_numpy(getattr(module, f"weight_ih_l{layer}").grad).T.copy()
    dU = to_numpy(getattr(module, f"weight_hh_l{layer}").grad).T.copy()
    g_ih = to_numpy(getattr(module, f"bias_ih_l{layer}").grad)
    g_hh = to_numpy(getattr(module, f"bias_hh_l{layer}").grad)
    if sum_biases:
        # b = b_ih + b_hh, so dL/db equals each of the two (they are the same number).
        tol = 1e-12 if g_ih.dtype == np.float64 else 1e-5
        assert rel_error(g_ih, g_hh) < tol
        return dW, dU, g_ih
    return dW, dU, np.stack([g_ih, g_hh])


def run_torch_rnn(module, x, h0, c0=None, lengths=None, dy=None, dh=None, dc=None):
    """Run a torch RNN (batch_first=False) on time-major numpy arrays and backpropagate
    sum(y*dy) + sum(hT*dh) + sum(cT*dc). Returns outputs, final states and input/state grads."""
    dt = next(module.parameters()).dtype
    xt = torch.tensor(x, dtype=dt, requires_grad=True)
    h0t = torch.tensor(h0[None], dtype=dt, requires_grad=True)
    state = h0t
    c0t = None
    if c0 is not None:
        c0t = torch.tensor(c0[None], dtype=dt, requires_grad=True)
        state = (h0t, c0t)
    T = x.shape[0]
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), enforce_sorted=False)
        out, final = module(packed, state)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        y, final = module(xt, state)
    hT, cT = (final if c0 is not None else (final, None))
    loss = (y * torch.tensor(dy, dtype=dt)).sum() + (hT[0] * torch.tensor(dh, dtype=dt)).sum()
    if cT is not None:
        loss = loss + (cT[0] * torch.tensor(dc, dtype=dt)).sum()
    loss.backward()
    res = dict(y=to_numpy(y), h=to_numpy(hT[0]), dx=to_numpy(xt.grad), dh0=to_numpy(h0t.grad[0]))
    if cT is not None:
        res.update(c=to_numpy(cT[0]), dc0=to_numpy(c0t.grad[0]))
    return res


def grad_error(numerical, analytic):
    """Normwise relative error of a gradient: max |difference| / max |entry|."""
    scale = max(np.max(np.abs(numerical)), np.max(np.abs(analytic)), 1e-12)
    return float(np.max(np.abs(numerical - analytic)) / scale)


def assert_matches(pairs, dtype):
    """Each (name, ours, theirs) has dtype and agrees to DESIGN's tolerance (float64 1e-10, float32 1e-5)."""
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-5
    for name, ours, theirs in pairs:
        assert ours.dtype == dtype, name
        assert rel_error(ours, theirs) < tol, (name, rel_error(ours, theirs))
