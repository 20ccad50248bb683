"""One LightningModule per architecture family of the identity task, and what they share."""

import inspect

from lightning_modules.base import IdentityTaskModule
from lightning_modules.cnn import CNN
from lightning_modules.fcn import FCN
from lightning_modules.residual_cnn import ResidualCNN

__all__ = [
    "CNN",
    "FCN",
    "IdentityTaskModule",
    "ResidualCNN",
    "family_of",
    "option_defaults",
    "short_names",
]
LINKED_FROM_DATA = ("image_shape", "test_set_names")
FAMILIES = {family.__name__: family for family in (CNN, FCN, ResidualCNN)}


def family_of(class_path) -> type[IdentityTaskModule] | None:
    """The family a config's `model.class_path` names ("lightning_modules.CNN" or "CNN"); None
    for a class that is no family of this package."""
    return FAMILIES.get(str(class_path).rsplit(".", 1)[-1])


def option_defaults(class_path: str) -> dict:
    """A family's options with their defaults ({"init_gain": 1.0, ...}), its own and the shared
    training options; {} for a class path that is no family of this package. Arguments the data
    module fills in (image_shape, test_set_names) are left out."""
    family = family_of(class_path)
    defaults: dict = {}
    for cls in reversed(family.__mro__ if family else ()):
        if isinstance(cls, type) and issubclass(cls, IdentityTaskModule):
            for name, p in inspect.signature(cls.__init__).parameters.items():
                if p.default is not inspect.Parameter.empty and name not in LINKED_FROM_DATA:
                    defaults[name] = p.default
    return defaults


def short_names() -> dict[str, str]:
    """Every family's short names by config key (model.depth -> d), as the run names use them."""
    return {
        f"model.{key}": short
        for family in (CNN, FCN, ResidualCNN)
        for key, short in family.SHORT_NAMES.items()
    }
