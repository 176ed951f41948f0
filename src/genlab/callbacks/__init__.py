"""Training callbacks: image grids (samples, long-run chains, reconstructions)."""

from genlab.callbacks.images import LongRunGrid, ReconstructionGrid, SampleGrid

__all__ = ["LongRunGrid", "ReconstructionGrid", "SampleGrid"]
