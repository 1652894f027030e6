"""Ignite handlers for LiteZoo training workflows (attach them to MONAI's ``SupervisedTrainer``)."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events
from torch import nn

from litezoo.blocks.fusible import deep_training_slope
from litezoo.networks.lv_unet import set_slope

__all__ = ["DeepTrainingSchedule"]

logger = logging.getLogger(__name__)


class DeepTrainingSchedule:
    """LV-UNet's deep-training schedule: before every epoch, set the fusible blocks' LeakyReLU slope to
    :func:`~litezoo.blocks.fusible.deep_training_slope` of (epoch, max epochs), reaching exactly 1 in the last epoch,
    so that the trained network can then be re-parameterised (``litezoo.networks.reparameterize``) exactly.

    Args:
        network: the network being trained (a ``DistributedDataParallel`` wrapper is unwrapped).

    Example (bundle config)::

        {"_target_": "litezoo.handlers.DeepTrainingSchedule", "network": "@network"}
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = getattr(network, "module", network)

    def attach(self, engine: Engine) -> None:
        """Run before every epoch of ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        slope = deep_training_slope(engine.state.epoch, engine.state.max_epochs)
        set_slope(self.network, slope)
        logger.info("Epoch %d/%d: deep-training slope %.5f", engine.state.epoch, engine.state.max_epochs, slope)
