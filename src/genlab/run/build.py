"""Building a run's parts from its config, with GenlabErrors passed through unwrapped."""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from genlab.errors import GenlabError


def build(node: DictConfig, **kwargs):
    """hydra.utils.instantiate, letting a GenlabError raised by the target through unwrapped."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, GenlabError):
            raise err.__cause__ from None
        raise


def build_data_and_model(cfg: DictConfig):
    """The datamodule (decoded and split, with data.num_classes filled in from it when null)
    and the model of a run config. Splitting here checks the hold-outs and the batch size
    against the number of images before the model is built or anything written."""
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    if cfg.data.get("num_classes") is None:
        with open_dict(cfg):
            cfg.data.num_classes = datamodule.num_classes
    return datamodule, build(cfg.model)
