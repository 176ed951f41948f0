"""Training callbacks: image grids (samples, reconstructions), the progress bar, the final
validation at a max_steps stop."""

from genlab.callbacks.images import ReconstructionGrid, SampleGrid
from genlab.callbacks.progress import ProgressBar
from genlab.callbacks.validation import ValidateAtMaxSteps

__all__ = ["ProgressBar", "ReconstructionGrid", "SampleGrid", "ValidateAtMaxSteps"]
