"""Lossless compression of images with a generative model: `genlab-codec compress CKPT IMAGES
OUT` / `genlab-codec decompress CKPT IN OUT` (`genlab.codec.cli`).

A model with a likelihood is a code: about -log2 p(x) bits per image.
- A PixelCNN (exact p(x) = prod_t p(x_t | x_<t)) codes every sub-pixel, in its raster-then-
  channel order, with a range coder under its conditional (`genlab.codec.autoregressive`).
- A VAE (p(x) only through its bound) codes by bits-back coding on an ANS stack (BB-ANS,
  Townsend et al. 2019): about the negative ELBO per image (`genlab.codec.bitsback`).
Both use `constriction`'s Rust-backed coders. The file (`genlab.codec.container`) records the
checkpoint's SHA-256, the coder, the image shape and count, the coded stream and a SHA-256 of
the original pixels, so that a file decoded with another model, or by a machine that computes
the probabilities differently, is an error and never a silently different image.
"""
