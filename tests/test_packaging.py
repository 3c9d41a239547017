"""The built wheel carries its data: installed into a fresh virtualenv, `droneshield migrate`
and `droneshield serve` find the migrations and the dashboard from any directory.

The wheel is built with `uv build` and installed offline with `--no-deps`: its dependencies are
the ones this test run already has, reached through a `.pth` file, so the test needs no network
and no index, and the package itself can only come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import trio

from .support.processes import READY, ROOT, spawn


def _install_wheel(tmp_path: Path) -> Path:
    """Build the wheel and install it into a new virtualenv; the virtualenv's bin directory."""
    uv = shutil.which("uv")
    assert uv is not None, "uv is needed to build the wheel (the README's setup installs it)"
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    run = {"check": True, "capture_output": True, "cwd": ROOT}
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], **run)
    [wheel] = dist.glob("droneshield-*.whl")
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], **run)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        **run,
        text=True,
    ).stdout.strip()
    # The dependencies installed here, behind the wheel's own files (a path line in a .pth is
    # appended to sys.path; the editable install's own .pth in that directory is not read).
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--offline", "--no-deps", "--python", python, wheel],
        **run,
    )
    return venv / "bin"


async def test_an_installed_wheel_migrates_and_serves_the_dashboard_from_another_directory(
    empty_database_url: str, tmp_path: Path
):
    with trio.fail_after(120):
        bin_dir = await trio.to_thread.run_sync(_install_wheel, tmp_path)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = {
            **os.environ,
            "DATABASE_URL": empty_database_url,
            "DRONESHIELD_DATA_DIR": str(elsewhere / "data"),
            "DRONESHIELD_HTTP_PORT": "0",
            "DRONESHIELD_GRPC_PORT": "0",
        }
        where = await trio.run_process(
            [bin_dir / "python", "-c", "import droneshield; print(droneshield.__file__)"],
            cwd=elsewhere,
            env=env,
            capture_stdout=True,
        )
        assert Path(where.stdout.decode().strip()).is_relative_to(bin_dir.parent)
        migrated = await trio.run_process(
            [bin_dir / "droneshield", "migrate"], cwd=elsewhere, env=env, capture_stderr=True
        )
        assert "applied migration 0001_" in migrated.stderr.decode()
        async with spawn([str(bin_dir / "droneshield"), "serve"], env=env, cwd=elsewhere) as d:
            found = READY.search(await d.wait_for("droneshield ready"))
            assert found is not None
            base = f"http://127.0.0.1:{found.group(2)}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                ready = await http.get("/readyz")
                page = await http.get("/")
                script = await http.get("/client/js/api.js")
    assert ready.json() == {"status": "ready"}
    assert page.status_code == 200
    assert "<title>" in page.text
    assert script.status_code == 200
    assert "export class ApiError" in script.text
