"""The mathematics of each family as plain functions of tensors: no networks, no Lightning, only
torch and genlab's errors. Each module is tested against closed forms or brute force.

    distributions  pixel likelihoods, Gaussian densities and KLs, slerp
    bpd            the one bits-per-dimension convention of every likelihood
    random         seeded noise and seed mixing
    penalties      input-gradient penalties (WGAN-GP, R1)
    vae            the ELBO and the importance-weighted bound
    diffusion      Gaussian diffusion: schedules, samplers, the variational bound
    gan            GAN objectives on discriminator logits
    autoregressive raster-then-channel ordering, per-sub-pixel heads, exact ancestral sampling
"""
