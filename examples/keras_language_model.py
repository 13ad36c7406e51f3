"""The articles' Keras language model, with lstmkit: Embedding -> LSTM -> Dense(softmax), sparse
cross-entropy and Adam, trained to predict the next word of a Shakespeare sonnet.

The article's sizes (vocab_size 10000, embedding_dim 128, rnn_units 1024) are cut down so that
this runs in seconds; `lstmkit textgen` trains the full-size model on tiny Shakespeare.
"""
import numpy as np

from lstmkit.layers import LSTM, Dense, Embedding
from lstmkit.losses import SparseCategoricalCrossentropy
from lstmkit.model import Sequential
from lstmkit.optim import Adam

TEXT = """shall i compare thee to a summer's day ? thou art more lovely and more temperate :
rough winds do shake the darling buds of may , and summer's lease hath all too short a date :
sometime too hot the eye of heaven shines , and often is his gold complexion dimm'd ;
and every fair from fair sometime declines , by chance or nature's changing course untrimm'd ;
but thy eternal summer shall not fade , nor lose possession of that fair thou ow'st ;
nor shall death brag thou wander'st in his shade , when in eternal lines to time thou grow'st :
so long as men can breathe or eyes can see , so long lives this , and this gives life to thee ."""

words = TEXT.split()
vocab = sorted(set(words))
index = {w: i for i, w in enumerate(vocab)}
ids = np.array([index[w] for w in words])
context = 6
inputs = np.stack([ids[i:i + context] for i in range(len(ids) - context)])   # (N, context)
labels = ids[context:]                                                          # (N,) next word

# Hyperparameters (the article: 10000, 128, 1024)
vocab_size = len(vocab)
embedding_dim = 16
rnn_units = 64

# The model
model = Sequential([
    Embedding(vocab_size, embedding_dim),
    LSTM(rnn_units),
    Dense(vocab_size, activation="softmax"),
], seed=0)

# Loss and optimizer; the softmax is inside the model, so the loss takes probabilities
loss_fn = SparseCategoricalCrossentropy(from_logits=False)
optimizer = Adam(learning_rate=0.01)
model.compile(optimizer=optimizer, loss=loss_fn, metrics=["accuracy"])


# The training step: forward, loss, backward through every layer, one Adam update
def train_step(inputs, labels):
    return model.train_on_batch(inputs, labels)


rng = np.random.default_rng(0)
losses = []
for epoch in range(30):
    order = rng.permutation(len(inputs))
    batch_losses = [train_step(inputs[order[s:s + 16]], labels[order[s:s + 16]])
                    for s in range(0, len(inputs), 16)]
    losses.append(float(np.mean(batch_losses)))
    if epoch % 10 == 9:
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f}")

print(model.summary())
loss, accuracy = model.evaluate(inputs, labels)
print(f"next-word accuracy on the sonnet: {accuracy:.2f}")

# Greedy continuation of the first line
seed = list(ids[:context])
for _ in range(10):
    probs = model.predict(np.array([seed[-context:]]))[0]
    seed.append(int(np.argmax(probs)))
print("generated:", " ".join(vocab[i] for i in seed))
print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f}")
