"""W&B set-up: `.env` loading, the run mode by W&B's own rules, and closing a run.

W&B asks for a key when it has none and no mode is set; a researcher without one should still get
a full run, so the mode falls back to offline and the command prints the `wandb sync` line to
upload it later. Online is chosen exactly when W&B itself would find credentials for the server it
is pointed at (`WANDB_BASE_URL`, default the public one): `WANDB_API_KEY`,
`WANDB_IDENTITY_TOKEN_FILE`, or an entry for that server in the netrc file (`$NETRC`, else
`~/.netrc`), which is what `wandb login` writes. A run started by `wandb agent` always goes
online: it belongs to a sweep on that server.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlsplit

import dotenv

DEFAULT_BASE_URL = "https://api.wandb.ai"
# Set by `wandb agent` in the environment of every run it launches.
AGENT_ENV = "WANDB_SWEEP_ID"
MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")


class WandbCredentialsMissing(RuntimeError):
    """WANDB_MODE=online asked for, and W&B would find no key for its server."""


class EnvFileError(WandbCredentialsMissing):
    """A `.env` that cannot be read; every command reports it in one line, like a missing key."""


def load_env_file(path: str | os.PathLike = ".env") -> dict[str, str]:
    """Read a `.env` file (python-dotenv's syntax: quotes, `export`, inline `# comments`) into the
    environment, never overriding a variable that is already set (the shell wins) nor setting an
    empty one (an empty `WANDB_MODE=` means "choose for me"). Returns what it set."""
    file = Path(path)
    if not file.is_file():
        return {}
    loaded = {}
    try:
        values = dotenv.dotenv_values(file)
    except (OSError, UnicodeDecodeError) as error:
        raise EnvFileError(
            f"{file} cannot be read ({error}); it must be UTF-8 text of KEY=value lines"
        ) from None
    for key, value in values.items():
        if value and key not in os.environ:
            os.environ[key] = loaded[key] = value
    return loaded


def base_url() -> str:
    return (os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def netrc_path() -> Path:
    """The netrc file W&B reads: $NETRC, else ~/.netrc, else ~/_netrc where only that exists."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix, windows = Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()
    return windows if windows.exists() and not unix.exists() else unix


def netrc_key(url: str | None = None) -> str | None:
    """The API key the netrc file holds for the server at `url` (default: W&B's base URL)."""
    host = urlsplit(url or base_url()).netloc
    try:
        entry = netrc.netrc(netrc_path()).authenticators(host) if host else None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return entry[2] if entry and entry[2] else None


def has_credentials() -> bool:
    """Whether W&B would find credentials for its configured server."""
    return bool(
        os.environ.get("WANDB_API_KEY")
        or os.environ.get("WANDB_IDENTITY_TOKEN_FILE")
        or netrc_key()
    )


def launched_by_agent() -> bool:
    return bool(os.environ.get(AGENT_ENV))


def resolve_wandb_mode() -> str:
    """WANDB_MODE if set; online under a `wandb agent` or with credentials; else offline. The
    choice is written back to WANDB_MODE so child processes agree.

    Raises WandbCredentialsMissing for WANDB_MODE=online without credentials (W&B would stop with
    a traceback, or wait at a prompt, only once the run starts)."""
    mode = os.environ.get("WANDB_MODE", "").strip()
    if not mode:
        mode = "online" if launched_by_agent() or has_credentials() else "offline"
        os.environ["WANDB_MODE"] = mode
    elif mode not in MODES:
        raise WandbCredentialsMissing(
            f"WANDB_MODE={mode!r} is not a W&B mode; use online, offline or disabled"
        )
    else:  # W&B itself rejects " offline " with a traceback, once the run has started
        os.environ["WANDB_MODE"] = mode
    if mode == "online" and not (has_credentials() or launched_by_agent()):
        raise WandbCredentialsMissing(
            f"WANDB_MODE=online but W&B has no key for {base_url()}: run `wandb login` (or set "
            f"WANDB_API_KEY), or use WANDB_MODE=offline and `wandb sync` later"
        )
    return mode


def finish_wandb(logger, exit_code: int) -> None:
    """Close the logger's W&B run (exit code 1 marks it failed) and, offline, say how to upload
    it."""
    run = logger.experiment
    offline = run.settings.mode == "offline" or run.offline
    run_path = Path(run.dir).parent
    run.finish(exit_code=exit_code)
    if offline:
        print(f"W&B ran offline; upload with: wandb sync {run_path}", flush=True)
