"""The data the package carries: the SQL migrations and the dashboard.

In the repository they live at the top level (`db/migrations/`, `client/`), where a reader looks
for them. A built wheel carries copies inside the package (`droneshield/_data/`, put there by
the build: `force-include` in pyproject.toml), so an installed daemon finds them wherever it is
started from. A source checkout has no `_data/` and reads the top-level folders.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

_PACKAGED: Final = "_data"
_CHECKOUT: Final = Path(__file__).resolve().parents[1]


def _locate(packaged: str, checkout: str) -> Path:
    inside = files(__package__).joinpath(_PACKAGED, packaged)
    # Installed as plain files (never zipped: hatch wheels are unpacked), so a real directory.
    if isinstance(inside, Path) and inside.is_dir():
        return inside
    return _CHECKOUT / checkout


MIGRATIONS_DIR: Final = _locate("migrations", "db/migrations")
CLIENT_DIR: Final = _locate("client", "client")
