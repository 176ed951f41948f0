"""Metrics: bits/dim, the Inception-feature metrics (FID, KID, IS, precision/recall), and the
representation evaluation of models that encode (linear probe, k-NN, k-means clustering)."""
