"""What a new user does first: build the wheel, install it into a fresh venv outside the
checkout, and use it from there.

The wheel is built from this checkout without build isolation and installed with
``--no-deps --no-index``; the fresh venv reaches the dependencies through a ``.pth`` line
naming the test venv's site-packages. A ``.pth`` line only appends a directory to
``sys.path`` (its own ``.pth`` files are not run), so the test venv's editable finder that
maps ``treadctl`` to the source tree is not active there: ``treadctl`` can only come from the
installed wheel, and every command runs with a working directory outside the tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the files git would ship (tracked, plus new ones not ignored):
    # an in-place build reuses build/lib, which can hold files the package config no
    # longer ships, and would hide exactly the mistake this test is for.
    src = tmp_path_factory.mktemp("src")
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if not (REPO / rel).is_file():
            continue  # deleted in the working tree
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        capture_output=True, text=True, cwd=src, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = sorted(out.glob("treadctl-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("user")
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_treadctl_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir


def _run(
    venv: Path, *args: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TREADCTL_PROFILES_DIR")}
    env["XDG_STATE_HOME"] = str(cwd / "state")
    return subprocess.run(
        [str(venv / "bin" / "treadctl"), *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )


def test_wheel_holds_only_the_treadctl_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert tops == {"treadctl", dist_info}, tops
    shipped = {n for n in names if n.startswith("treadctl/firmware_profiles/")}
    repo_profiles = {
        "treadctl/firmware_profiles/" + p.name
        for p in (REPO / "treadctl" / "firmware_profiles").glob("*.toml")
    }
    assert shipped == repo_profiles
    builtin = {n for n in names if n.startswith("treadctl/programs/builtin/")}
    assert len(builtin) == len(list((REPO / "treadctl/programs/builtin").glob("*.toml")))


def test_installed_treadctl_comes_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    py = venv / "bin" / "python"
    out = subprocess.run(
        [str(py), "-c", "import treadctl; print(treadctl.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout.strip()
    assert out.startswith(str(venv)), out
    # Nothing from the development tree is importable from the install.
    for name in ("simulator", "benchmarks", "soak", "fuzz"):
        proc = subprocess.run([str(py), "-c", f"import {name}"], capture_output=True,
                              text=True, cwd=tmp_path)
        assert proc.returncode != 0, f"{name} importable from the installed wheel"


def test_profiles_list_outside_the_tree(venv: Path, tmp_path: Path) -> None:
    proc = _run(venv, "profiles", "list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("generic-ftms", "treadctl-reference", "kinetic-rx2"):
        assert name in proc.stdout


def test_demo_program_outside_the_tree(venv: Path, tmp_path: Path) -> None:
    proc = _run(venv, "run", "reverse-walk-intro", "--speedup", "max", "--json",
                "--data-dir", str(tmp_path / "data"), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last.get("outcome") == "finished", last
    sessions = _run(venv, "sessions", "list", "--data-dir", str(tmp_path / "data"),
                    cwd=tmp_path)
    assert sessions.returncode == 0, sessions.stderr
    assert "reverse-walk-intro" in sessions.stdout


def test_daemon_check_on_the_example_config(venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text((REPO / "examples" / "daemon.toml").read_text())
    config.chmod(0o600)
    proc = _run(venv, "daemon", "--check", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


def test_etc_and_env_profiles_override_the_shipped_ones(venv: Path, tmp_path: Path) -> None:
    override = tmp_path / "profiles"
    override.mkdir()
    text = (REPO / "treadctl/firmware_profiles/generic-ftms.toml").read_text()
    text = text.replace('description = "', 'description = "SITE OVERRIDE ', 1)
    (override / "generic-ftms.toml").write_text(text)
    env = {**os.environ, "TREADCTL_PROFILES_DIR": str(override)}
    proc = subprocess.run([str(venv / "bin" / "treadctl"), "profiles", "list"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("generic-ftms"))
    assert "SITE OVERRIDE" in line
