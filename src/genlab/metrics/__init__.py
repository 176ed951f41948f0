"""Metrics: bits/dim, and the Inception-feature metrics (FID, KID, IS, precision/recall)."""
