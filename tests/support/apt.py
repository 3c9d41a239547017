"""Debian packages the tests need (chromium, nats-server), installed with apt-get when missing,
as root or through passwordless sudo."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

APT_TIMEOUT: Final = 900  # seconds for apt-get to install a package


def ensure_package(package: str, path: Path) -> str | None:
    """Install `package` if `path` (a file it ships) is missing. Returns why it cannot be had,
    or None."""
    if path.exists():
        return None
    if shutil.which("apt-get") is None:
        return f"{package} is not installed and there is no apt-get to install it"
    apt = ["apt-get"]
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            return f"{package} is not installed and installing it needs root (no sudo)"
        apt = ["sudo", "-n", "apt-get"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*apt, *args], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT
        )

    apt_get("update")  # a stale or empty package list is the usual reason install fails
    done = apt_get("install", "-y", "--no-install-recommends", package)
    if done.returncode:
        return f"apt-get install {package} failed: {done.stderr.strip()[-500:]}"
    return None if path.exists() else f"apt-get ran but {path} is still missing"
