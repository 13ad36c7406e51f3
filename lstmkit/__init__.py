"""lstmkit: LSTM networks from the equations up."""
__version__ = "0.1.0"
