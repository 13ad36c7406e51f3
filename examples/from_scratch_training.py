"""The articles' from-scratch LSTM class, trained: the reference cell (plain NumPy, forward and
backpropagation through time), a linear readout, mini-batches, gradient clipping by the global
norm and a learning-rate schedule, on next-step prediction of a noisy sine wave.

The article keeps one matrix per gate (wi, wf, wo, wc and Ui, Uf, Uo, Uc); here they are the
four column blocks, in the order i, f, g (= c), o, of W (input_dim, 4H) and U (H, 4H).
"""
import numpy as np

from lstmkit.cells.lstm import lstm_backward, lstm_forward
from lstmkit.optim import ExponentialDecay, clip_by_global_norm


class LSTM:
    def __init__(self, input_dim, output_dim, hidden_dim, seed=0):
        rng = np.random.default_rng(seed)
        self.input_dim, self.output_dim, self.hidden_dim = input_dim, output_dim, hidden_dim
        H = hidden_dim
        # All weights start uniform in [-0.1, 0.1] and all biases at zero, as in the article
        self.params = {
            "W": rng.uniform(-0.1, 0.1, (input_dim, 4 * H)),   # [wi | wf | wc | wo]
            "U": rng.uniform(-0.1, 0.1, (H, 4 * H)),           # [Ui | Uf | Uc | Uo]
            "b": np.zeros(4 * H),                              # [bi | bf | bc | bo]
            "Wy": rng.uniform(-0.1, 0.1, (H, output_dim)),     # readout h_t -> y_t
            "by": np.zeros(output_dim),
        }

    def forward(self, X):
        """X (T, batch, input_dim) -> predictions (T, batch, output_dim), from h0 = c0 = 0."""
        p = self.params
        hs, _, self.cache = lstm_forward(X, p["W"], p["U"], p["b"])
        self.hs = hs
        return hs @ p["Wy"] + p["by"]

    def forward_backward(self, X, Y):
        """Mean squared error of the predictions for X against Y, and every parameter's gradient."""
        pred = self.forward(X)
        diff = pred - Y
        loss = float(np.mean(diff ** 2))
        dpred = 2 * diff / diff.size
        p = self.params
        dhs = dpred @ p["Wy"].T
        _, dW, dU, db, _, _ = lstm_backward(dhs, None, None, self.cache)
        self.gradients = {"W": dW, "U": dU, "b": db,
                          "Wy": self.hs.reshape(-1, self.hidden_dim).T @ dpred.reshape(-1, self.output_dim),
                          "by": dpred.reshape(-1, self.output_dim).sum(0)}
        return loss

    def clipping(self, max_grad_norm):
        """Scale all gradients together so that their global norm is at most max_grad_norm."""
        self.gradients, grad_norm = clip_by_global_norm(self.gradients, max_grad_norm)
        return grad_norm

    def update_parameters(self, learning_rate):
        for name, grad in self.gradients.items():
            self.params[name] -= learning_rate * grad


def make_data(rng, n, T):
    """n noisy sine snippets of T + 1 steps; the target of each step is the next value."""
    start = rng.uniform(0, 2 * np.pi, n)
    t = start[None, :] + 0.3 * np.arange(T + 1)[:, None]
    series = np.sin(t) + 0.05 * rng.standard_normal(t.shape)
    return series[:-1, :, None], series[1:, :, None]     # (T, n, 1) each


rng = np.random.default_rng(0)
X, Y = make_data(rng, n=64, T=20)
model = LSTM(input_dim=1, output_dim=1, hidden_dim=16)
get_learning_rate = ExponentialDecay(0.5, decay_steps=100, decay_rate=0.5)
batch_size, max_grad_norm = 16, 1.0

step, losses = 0, []
for epoch in range(40):
    epoch_loss = 0.0
    for i in range(0, X.shape[1], batch_size):
        mini_batch = (X[:, i:i + batch_size], Y[:, i:i + batch_size])
        epoch_loss += model.forward_backward(*mini_batch)   # one pass through the mini-batch
        grad_norm = model.clipping(max_grad_norm)           # clip gradients that are too large
        model.update_parameters(get_learning_rate(step))    # step with the scheduled rate
        step += 1
    losses.append(epoch_loss / (X.shape[1] // batch_size))
    if epoch % 10 == 9:
        print(f"epoch {epoch + 1}: loss {losses[-1]:.5f}, gradient norm {grad_norm:.3f}, "
              f"learning rate {get_learning_rate(step):.4f}")
print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f}")
