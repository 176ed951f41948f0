"""Training callbacks: image grids (samples, long-run chains, reconstructions), the progress
bar, the final validation at a max_steps stop."""

from genlab.callbacks.images import LongRunGrid, ReconstructionGrid, SampleGrid
from genlab.callbacks.progress import ProgressBar
from genlab.callbacks.validation import ValidateAtMaxSteps

__all__ = ["LongRunGrid", "ProgressBar", "ReconstructionGrid", "SampleGrid", "ValidateAtMaxSteps"]
