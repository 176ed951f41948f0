"""genlab: deep generative models of 32x32 images."""
