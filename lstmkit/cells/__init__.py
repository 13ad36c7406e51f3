"""Reference recurrent cells: readable NumPy forward and backward passes over whole sequences."""
