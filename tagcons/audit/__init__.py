"""`tagcons audit`: rank the pairs whose label is probably wrong (out-of-fold probabilities + cleanlab)."""
