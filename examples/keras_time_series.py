"""The articles' Keras time-series model, with lstmkit: LSTM(50) -> Dense(1), MSE, Adam, on a
price-like series where each value is predicted from the one before (input_shape (1, 1))."""
import numpy as np

from lstmkit.layers import LSTM, Dense
from lstmkit.model import Sequential

# A "stock price": trend + cycle + noise, scaled to about [0, 1]
rng = np.random.default_rng(0)
t = np.arange(160)
price = 10 + 0.02 * t + np.sin(t / 6) + 0.1 * rng.standard_normal(len(t))
price = (price - price.min()) / (price.max() - price.min())
X_train = price[:-1].reshape(-1, 1, 1).astype(np.float32)   # (samples, time steps = 1, features = 1)
y_train = price[1:].reshape(-1, 1).astype(np.float32)

# Create the LSTM model
model = Sequential(seed=0)
model.add(LSTM(50))
model.add(Dense(1))
model.build((1, 1))              # Keras: LSTM(50, input_shape=(1, 1))

# Compile the model
model.compile(optimizer="adam", loss="mean_squared_error")

# Train the model (the article: epochs=100, batch_size=1)
history = model.fit(X_train, y_train, epochs=8, batch_size=1, verbose=0)

print(model.summary())
pred = model.predict(X_train[-5:])
for p, y in zip(pred[:, 0], y_train[-5:, 0]):
    print(f"predicted {p:.3f}  actual {y:.3f}")
losses = history.history["loss"]
print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f}")
