"""The two jobs end to end, used by the command line: text generation and forecasting."""
