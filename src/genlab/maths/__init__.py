"""The mathematics of each family as plain functions of tensors: no networks, no Lightning, only
torch and genlab's errors. Each module is tested against closed forms or brute force.

    distributions  pixel likelihoods (and the decoder head reading them), Gaussian densities
                   and KLs, slerp
    bpd            the one bits-per-dimension convention of every likelihood
    random         seeded noise and seed mixing
    penalties      input-gradient penalties (WGAN-GP, R1, the contractive ||J_f(x)||_F^2)
    vae            the ELBO and the importance-weighted bound
    diffusion      Gaussian diffusion: schedules, samplers, the variational bound
    gan            GAN objectives on discriminator logits
    autoencoder    denoising corruptions and the walk-back chain
    langevin       energy-based models: Langevin sampling, contrastive divergence, JEM's energy
    autoregressive raster-then-channel ordering, per-sub-pixel heads, exact ancestral sampling
"""
