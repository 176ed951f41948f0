"""Training callbacks: image grids (samples, reconstructions)."""

from genlab.callbacks.images import ReconstructionGrid, SampleGrid

__all__ = ["ReconstructionGrid", "SampleGrid"]
