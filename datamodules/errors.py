"""Errors the data module raises. Both are ValueError subclasses, so a notebook needs nothing from
the app to catch them; the command line turns them into one line and exit code 2."""


class DataConfigError(ValueError):
    """A data setting that cannot work (an index out of range, a folder without images); the
    message names the value and what would be valid."""


class DataNotFoundError(DataConfigError):
    """A data set is neither on disk nor downloadable; the message says which files go where."""
