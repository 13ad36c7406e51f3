"""The articles' PyTorch regression, with lstmkit layers: a class holding an LSTM and a linear
head, an explicit initial hidden state (h0, c0) from init_hidden, MSE and Adam, trained one
sample at a time. Where PyTorch has autograd, each layer here has its own backward."""
import numpy as np

from lstmkit.layers import LSTM as LSTMLayer
from lstmkit.layers import Dense
from lstmkit.losses import MeanSquaredError
from lstmkit.optim import Adam


class LSTM:
    def __init__(self, input_size, hidden_size, output_size, seed=0):
        rng = np.random.default_rng(seed)
        self.hidden_size = hidden_size
        # return_sequences + return_state: the output of every step and the final (h, c), like nn.LSTM
        self.rnn = LSTMLayer(hidden_size, return_sequences=True, return_state=True)
        self.fc = Dense(output_size)
        self.rnn.build((None, input_size), rng)
        self.fc.build((hidden_size,), rng)

    def forward(self, x, hidden):
        """x (batch, time, input_size), hidden = (h0, c0) each (batch, hidden_size)."""
        output, h, c = self.rnn.forward(x, training=True, initial_state=list(hidden))
        self.steps = output.shape
        output = self.fc.forward(output[:, -1, :])
        return output, (h, c)

    def backward(self, doutput):
        dlast = self.fc.backward(doutput)
        dseq = np.zeros(self.steps, dlast.dtype)
        dseq[:, -1, :] = dlast
        self.rnn.backward([dseq, None, None])

    def init_hidden(self, batch_size):
        return (np.zeros((batch_size, self.hidden_size), np.float32),
                np.zeros((batch_size, self.hidden_size), np.float32))

    def parameters(self):
        return {f"{layer.name}/{k}": v for layer in (self.rnn, self.fc) for k, v in layer.params.items()}

    def gradients(self):
        return {f"{layer.name}/{k}": v for layer in (self.rnn, self.fc) for k, v in layer.grads.items()}


model = LSTM(input_size=1, hidden_size=2, output_size=1)
criterion = MeanSquaredError()
optimizer = Adam(learning_rate=0.01)


def train(model, input, target, hidden):
    output, hidden = model.forward(input, hidden)
    loss = criterion.forward(output, target)
    model.backward(criterion.backward())                        # loss.backward()
    optimizer.apply(model.parameters(), model.gradients())      # optimizer.step()
    return loss


def train_one_epoch(model, input, target, batch_size):
    loss_sum = 0
    for i in range(0, len(input), batch_size):
        hidden = model.init_hidden(batch_size)
        loss_sum += train(model, input[i:i + batch_size], target[i:i + batch_size], hidden)
    return loss_sum / (len(input) / batch_size)


rng = np.random.default_rng(0)
input = rng.standard_normal((10, 1, 1)).astype(np.float32)
target = rng.standard_normal((10, 1)).astype(np.float32)

losses = []
for epoch in range(100):
    losses.append(train_one_epoch(model, input, target, 1))
    if epoch % 20 == 0 or epoch == 99:
        print("Epoch %d, loss: %.4f" % (epoch + 1, losses[-1]))
print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f}")
