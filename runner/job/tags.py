"""Tags every run records: who ran what code with which overrides."""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .. import __version__
from ..names import MlflowTag, Prefix, Tag
from ..secrets import scrub

if TYPE_CHECKING:
    from omegaconf import DictConfig


class CodeState:
    """git commit/dirty flag of the code this process runs, looked up once per process.

    Two git subprocesses cost ~20-60 ms; a sweep would pay them for every trial. The code
    a process runs is the code it loaded at start, so the first answer stays right.
    """

    def __init__(self) -> None:
        self._state: Optional[Dict[str, str]] = None

    def get(self) -> Dict[str, str]:
        if self._state is None:
            self._state = git_state()
        return dict(self._state)

    def reset(self) -> None:
        self._state = None


CODE_STATE = CodeState()


def git_state(cwd: Optional[str] = None) -> Dict[str, str]:
    """Commit and dirty flag of the code that ran, when it runs from a git checkout."""
    root = cwd or str(Path(__file__).resolve().parent.parent.parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {
            MlflowTag.SOURCE_GIT_COMMIT: commit.stdout.strip(),
            Tag.GIT_DIRTY: str(bool(dirty.stdout.strip())).lower(),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


def overrides(explicit: Optional[Sequence[str]] = None) -> List[str]:
    """The job's Hydra overrides (explicit ones when a sweeper runs trials in threads), scrubbed."""
    if explicit is not None:
        return [scrub(o) for o in explicit]  # "key=scheme://user:pw@host": scrub, not redact_url
    try:
        from hydra.core.hydra_config import HydraConfig

        return [scrub(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # not under Hydra (tests calling run_job directly)
        return []


def base_tags(cfg: DictConfig, job_overrides: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    tags = {
        Tag.VERSION: __version__,
        MlflowTag.SOURCE_NAME: "python -m runner",
        MlflowTag.SOURCE_TYPE: "LOCAL",
        MlflowTag.USER: _user(),
        Tag.OVERRIDES: json.dumps(overrides(job_overrides)),
    }
    tags.update(CODE_STATE.get())
    tags.update({f"{Prefix.USER_TAG}{k}": v for k, v in (cfg.get("tags") or {}).items()})
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
