"""One LightningModule per architecture family of the identity task, and what they share."""

from lightning_modules.base import IdentityTaskModule
from lightning_modules.cnn import CNN
from lightning_modules.fcn import FCN
from lightning_modules.residual_cnn import ResidualCNN

__all__ = ["CNN", "FCN", "IdentityTaskModule", "ResidualCNN"]
