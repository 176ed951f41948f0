"""`python -m genlab.tasks`: print the README's restoration table, family x task, each cell the
capability the family restores that task with (`genlab.tasks.restore.method_of`), the methods
behind them named by the families themselves (`restoration_methods`)."""

from __future__ import annotations

from genlab.tasks.restore import RESTORATION_TASKS, method_of


def families() -> dict[str, type]:
    """The README's name of each family and its model class (JEM restores as the EBM does)."""
    from genlab.models.autoencoder import Autoencoder
    from genlab.models.ddpm import DDPM
    from genlab.models.ebm import EBM
    from genlab.models.flow import Flow
    from genlab.models.gan import GAN
    from genlab.models.pixelcnn import PixelCNN
    from genlab.models.vae import VAE

    return {"VAE": VAE, "DDPM": DDPM, "GANs": GAN, "flows": Flow, "PixelCNNs": PixelCNN,
            "EBMs": EBM, "autoencoders": Autoencoder}


def restoration_table() -> str:
    """The markdown table: a row per family, a column per restoration task ("-": not offered),
    then the methods of the capabilities the row uses."""
    lines = ["| family | " + " | ".join(f"`{t}`" for t in RESTORATION_TASKS) + " | methods |",
             "| --- " * (len(RESTORATION_TASKS) + 2) + "|"]
    for name, cls in families().items():
        used = [method_of(cls, t) for t in RESTORATION_TASKS]
        methods = "; ".join(f"`{c}`: {cls.restoration_methods[c]}"
                            for c in dict.fromkeys(u for u in used if u))
        cells = [f"`{u}`" if u else "-" for u in used]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {methods or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(restoration_table())
