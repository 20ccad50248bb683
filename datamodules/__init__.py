"""Data of the identity task: the single training example and the named test sets."""

from datamodules.single_example import SingleExampleDataModule

__all__ = ["SingleExampleDataModule"]
