"""Attribute editing in a latent space (Kingma & Dhariwal 2018, sec. 5; White 2016): the
direction between the mean code of images that have an attribute and of those that do not,

    d = mean_{x has it} encode(x) - mean_{x lacks it} encode(x),

and test images moved along it: x -> decode(encode(x) + a d) for a in [-2, 2] (a = 0 is the
reconstruction, a = 1 adds the average difference). The attribute is one of CelebA's 40
(`list_attr_celeba.txt`) or, for labelled data, a class against the rest. One implementation
for every model that can encode and decode (VAE, autoencoders, flows).

Options (`task_options.edit.*` in evaluate.py): `attribute` (a CelebA attribute or a class
name; default Smiling for CelebA, else the first class), `examples` (validation images the
direction is estimated from, default 2000), `strengths` (default [-2, -1, -0.5, 0, 0.5, 1, 2]).
"""

from __future__ import annotations

from typing import Annotated

import torch

from genlab.checks import Range
from genlab.errors import GenlabError, check_choice
from genlab.tasks.base import TaskInputs, TaskResult, task

STRENGTHS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)


def attribute_direction(codes: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Mean code of the images with the attribute minus that of the images without it."""
    if has.all() or not has.any():
        raise GenlabError(f"The attribute direction needs images with and without the "
                          f"attribute; {int(has.sum())} of {len(has)} have it. Use more "
                          "examples (task_options.edit.examples) or another attribute.")
    return codes[has].mean(0) - codes[~has].mean(0)


def attribute_examples(datamodule, attribute: str | None, split: str = "val"
                       ) -> tuple[str, torch.Tensor]:
    """The attribute's name and, for every image of `split`, whether it has it."""
    attribute = None if attribute is None else str(attribute)  # class "7" arrives as 7
    if datamodule.attribute_names:
        names = datamodule.attribute_names
        default = "Smiling" if "Smiling" in names else names[0]
        name = check_choice("task_options.edit.attribute", attribute or default, names)
        return name, datamodule.attributes[split][:, names.index(name)]
    if datamodule.classes:
        name = check_choice("task_options.edit.attribute", attribute or datamodule.classes[0],
                            datamodule.classes)
        return name, datamodule.splits[split][1] == datamodule.classes.index(name)
    raise GenlabError(f"The edit task needs attributes (CelebA's list_attr_celeba.txt) or class "
                      f"labels, and {datamodule.name} has neither.")


def encode_all(model, images: torch.Tensor, labels: torch.Tensor | None, datamodule,
               batch_size: int = 256) -> torch.Tensor:
    """Codes of uint8 images, `batch_size` at a time."""
    codes = []
    for start in range(0, len(images), batch_size):
        x = datamodule.to_model_input(images[start:start + batch_size].to(model.device),
                                      train=False)
        y = None if labels is None else labels[start:start + batch_size].to(model.device)
        codes.append(model.encode(x, y))
    return torch.cat(codes)


@task("edit", needs=("encode+decode",),
      options={"attribute": str | int | None, "examples": Annotated[int, Range(2)],
               "strengths": list[float]})
def edit(model, inputs: TaskInputs) -> TaskResult:
    """Rows: test images moved along an attribute direction, from -2 to 2 times it."""
    options, datamodule = inputs.options, inputs.datamodule
    name, has = attribute_examples(datamodule, options.get("attribute"))
    n = int(options.get("examples", 2000))
    images, labels = datamodule.splits["val"]
    codes = encode_all(model, images[:n], labels[:n] if model.conditional else None, datamodule)
    direction = attribute_direction(codes, has[:n].to(codes.device))
    strengths = torch.tensor(options.get("strengths", STRENGTHS), device=codes.device)
    x = inputs.x[:8]
    y = None if inputs.labels is None else inputs.labels[:8]
    z = model.encode(x, y)
    moved = z[:, None] + strengths.view(1, -1, *[1] * (z.dim() - 1)) * direction
    row_labels = None if y is None else y.repeat_interleave(len(strengths))
    edited = model.decode(moved.flatten(0, 1), row_labels)
    return TaskResult(edited, nrow=len(strengths),
                      metrics={"direction_norm": float(direction.norm()),
                               "examples_with": int(has[:n].sum()),
                               "examples_without": int((~has[:n]).sum())})
