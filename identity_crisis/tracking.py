"""W&B set-up: `.env` loading and offline-by-default.

W&B asks for a key when it has none and no mode is set; a researcher without one should still get
a full run, so the mode falls back to offline and the command prints the `wandb sync` line to
upload it later.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path

WANDB_HOST = "api.wandb.ai"


def load_env_file(path: str | os.PathLike = ".env") -> dict[str, str]:
    """Read KEY=VALUE lines of a `.env` file into the environment, never overriding a variable
    that is already set (the shell wins). Returns what it set."""
    file = Path(path)
    if not file.is_file():
        return {}
    loaded = {}
    for line in file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        key, value = key.strip(), value.strip().strip("'\"")
        if key and value and key not in os.environ:
            os.environ[key] = loaded[key] = value
    return loaded


def _has_netrc_key() -> bool:
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode() -> str:
    """WANDB_MODE if set; else online with a key (WANDB_API_KEY or `wandb login`); else offline.
    The choice is written back to WANDB_MODE so child processes agree."""
    mode = os.environ.get("WANDB_MODE")
    if not mode:
        mode = "online" if os.environ.get("WANDB_API_KEY") or _has_netrc_key() else "offline"
        os.environ["WANDB_MODE"] = mode
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
