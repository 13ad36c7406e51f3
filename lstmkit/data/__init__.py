"""Data in, arrays out: text (tokenizers, TBPTT batches), series (windows, scaling, missing values), datasets."""
