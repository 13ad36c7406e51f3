"""Forward and backward through the reference LSTM on random data, checked by finite differences."""
import numpy as np

from lstmkit.cells.lstm import lstm_backward, lstm_forward

rng = np.random.default_rng(0)
T, B, I, H = 5, 3, 4, 6
x = rng.standard_normal((T, B, I))
W, U, b = rng.standard_normal((I, 4 * H)) * 0.3, rng.standard_normal((H, 4 * H)) * 0.3, np.zeros(4 * H)
y, (h, c), cache = lstm_forward(x, W, U, b)
dy = rng.standard_normal(y.shape)
dx, dW, dU, db, dh0, dc0 = lstm_backward(dy, None, None, cache)
print(f"x {x.shape} -> y {y.shape}, h {h.shape}, c {c.shape}; dW {dW.shape}, dU {dU.shape}")

eps, k = 1e-5, (1, 7)
U[k] += eps
up = np.sum(lstm_forward(x, W, U, b)[0] * dy)
U[k] -= 2 * eps
down = np.sum(lstm_forward(x, W, U, b)[0] * dy)
U[k] += eps
numeric = (up - down) / (2 * eps)
print(f"dL/dU{k}: backprop {dU[k]:.10f}, finite difference {numeric:.10f}, "
      f"relative error {abs(numeric - dU[k]) / abs(numeric):.1e}")
