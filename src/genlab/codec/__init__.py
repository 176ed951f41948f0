"""Lossless compression of images with an autoregressive model: `genlab-codec compress CKPT
IMAGES OUT` / `genlab-codec decompress CKPT IN OUT` (`genlab.codec.cli`).

A model with an exact likelihood p(x) = prod_t p(x_t | x_<t) (the PixelCNN family) codes an
image in about -log2 p(x) bits: every sub-pixel, in the model's raster-then-channel order, is
coded by a range coder (`constriction`, Rust-backed) under the model's conditional for it given
the sub-pixels before (`genlab.codec.coder`). The file (`genlab.codec.container`) records the
checkpoint's SHA-256, the image shape and count, the coded stream and a SHA-256 of the original
pixels, so that a file decoded with another model, or by a machine that computes the
probabilities differently, is an error and never a silently different image.
"""
