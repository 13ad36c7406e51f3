"""Loaders for the built-in data: text corpora and real time series, offline once cached.

This module and lstmkit.checkpoint are the only places below the apps that read files.
"""

# --- text corpora -------------------------------------------------------------------------------


# --- time series ----------------------------------------------------------------------------------
