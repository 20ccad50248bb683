"""Errors of the app's own commands (sweep, report, theory, init-signal) that the command line
turns into a one-line message instead of a traceback. The model families and the data module
raise their own (`lightning_modules.errors`, `datamodules.errors`)."""

import errno


class ConfigError(ValueError):
    """A value the user gave cannot work; the message names it and what would be valid."""


def check_positive(name: str, value, minimum: int | float = 1) -> None:
    if value is None or value < minimum:
        raise ConfigError(f"{name}={value!r} is not valid; it must be >= {minimum}")


# Errors of the disk, not of the code: said in one line naming the path, never a traceback.
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EACCES: "permission denied",
    errno.EROFS: "the file system is read-only",
}


def name_disk_path(error: BaseException, path) -> None:
    """Give a disk error that names no file (a write or a flush fails so) the folder it
    was writing into, so its message says where."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS and seen.filename is None:
            seen.filename = f"in {path}"
        seen = seen.__cause__ or seen.__context__


def disk_error(error: BaseException) -> str | None:
    """'no space left on the device writing PATH' for a disk error (here or the cause of the
    one given), None for any other error."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS:
            where = f" writing {seen.filename}" if seen.filename else ""
            return f"{DISK_ERRNOS[seen.errno]}{where}; free space there or write elsewhere"
        seen = seen.__cause__ or seen.__context__
    return None
