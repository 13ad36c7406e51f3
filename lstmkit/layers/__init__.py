"""Layers with hand-written backward passes, and a registry to rebuild them from saved configs:
`LAYERS[class_name](**config)` (Bidirectional's config nests its layer's class name and config)."""
from lstmkit.layers.attention import Attention
from lstmkit.layers.base import Layer
from lstmkit.layers.bidirectional import Bidirectional
from lstmkit.layers.dense import Dense
from lstmkit.layers.dropout import Dropout
from lstmkit.layers.embedding import Embedding
from lstmkit.layers.gru import GRU
from lstmkit.layers.lstm import LSTM
from lstmkit.layers.masking import Masking
from lstmkit.layers.recurrent import Recurrent
from lstmkit.layers.simple_rnn import SimpleRNN

LAYERS = {cls.__name__: cls for cls in (Attention, Bidirectional, Dense, Dropout, Embedding, GRU, LSTM,
                                        Masking, SimpleRNN)}

__all__ = ["LAYERS", "Layer", "Recurrent", *LAYERS]
