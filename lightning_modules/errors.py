"""Errors the model families raise. Both are ValueError / RuntimeError subclasses, so a notebook
needs nothing from the app to catch them; the command line turns them into one line and an exit
code (2 for a bad setting, 1 for a failed run)."""


class ModelConfigError(ValueError):
    """A model setting that cannot work (a check that a type annotation cannot express); the
    message names the value and what would be valid."""


class TrainingFailed(RuntimeError):
    """A run that started but produced no result (a diverged loss): reported as failed, never
    logged as a result."""
