"""The README's setup picks a Python that can take the install (scripts/python.sh, scripts/pick_python.py).

Why: a non-root user's python3 is usually the system's, where `pip install` fails (PEP 668's externally managed
marker on Debian 12 / Ubuntu 23.04+, or a root-owned site-packages). `bash scripts/run.sh` then has to make a
virtual environment itself, and every later command must find the same one.

The shell logic runs for real here, in a scratch copy of scripts/, with python3 on PATH replaced by small wrapper
scripts that answer the check as a given kind of Python would and hand everything else to this interpreter.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def _pick_module():
    spec = importlib.util.spec_from_file_location("pick_python", SCRIPTS / "pick_python.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pick = _pick_module()


# ----- the check itself


def test_a_virtual_environment_takes_installs_even_over_a_marked_base(tmp_path):
    stdlib = tmp_path / "lib"
    stdlib.mkdir()
    (stdlib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\n")
    ok, why = pick.decide(str(tmp_path / "venv"), str(tmp_path / "base"), str(stdlib), str(tmp_path))
    assert ok and "virtual environment" in why


def test_the_pep_668_marker_refuses(tmp_path):
    stdlib = tmp_path / "lib"
    stdlib.mkdir()
    (stdlib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\n")
    ok, why = pick.decide(str(tmp_path), str(tmp_path), str(stdlib), str(tmp_path))
    assert not ok and "PEP 668" in why


def test_a_writable_unmarked_python_takes_installs(tmp_path):
    ok, why = pick.decide(str(tmp_path), str(tmp_path), str(tmp_path / "no-such-stdlib"), str(tmp_path))
    assert ok and "writable" in why


def _as_nobody():
    os.setgid(65534)
    os.setuid(65534)


def test_a_site_packages_this_user_cannot_write_refuses():
    """The non-root path, forced: as root every directory is writable, so the check runs as uid 65534, with an
    interpreter and a copy of the script that uid can reach (root's own Python may sit under a private /root)."""
    root = os.geteuid() == 0
    interp = shutil.which("python3", path="/usr/bin:/bin") if root else sys.executable
    if interp is None:
        pytest.skip("no system python3 for uid 65534 to run")
    scratch = Path(tempfile.mkdtemp(prefix="pick-python-"))
    try:
        scratch.chmod(0o755)
        shutil.copy(SCRIPTS / "pick_python.py", scratch / "pick_python.py")
        (scratch / "pick_python.py").chmod(0o644)
        purelib = scratch / "site-packages"
        purelib.mkdir()
        purelib.chmod(0o555)
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import pick_python as m; "
                "print(m.decide('/x', '/x', '/no-such-stdlib', sys.argv[2]))")
        out = subprocess.run([interp, "-c", code, str(scratch), str(purelib)], capture_output=True, text=True,
                             preexec_fn=_as_nobody if root else None, check=True)
        assert out.stdout.startswith("(False, ") and "not writable" in out.stdout, out.stdout
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_check_run_as_a_script_says_yes_or_no():
    out = subprocess.run([sys.executable, str(SCRIPTS / "pick_python.py")], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.split()[0] in ("yes", "no"), out.stdout


# ----- scripts/python.sh, sourced as setup.sh / run.sh / test.sh source it


@pytest.fixture
def checkout(tmp_path):
    """A scratch checkout holding scripts/ (python.sh picks relative to the checkout's root)."""
    repo = tmp_path / "repo"
    shutil.copytree(SCRIPTS, repo / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "bin").mkdir()
    return repo


def _fake_python3(bindir: Path, verdict: str | None, exit_code: int = 0, venv_fails: bool = False) -> None:
    """python3 on PATH: answers scripts/pick_python.py with `verdict` (None: runs the real check), fails
    `-m venv` when venv_fails, and runs everything else with this interpreter."""
    lines = ["#!/bin/sh"]
    if verdict is not None:
        lines.append(f'if [ "$1" = scripts/pick_python.py ]; then echo "{verdict}"; exit {exit_code}; fi')
    if venv_fails:
        lines.append('if [ "$1" = -m ] && [ "$2" = venv ]; then echo "ensurepip is not available" >&2; exit 1; fi')
    lines.append(f'exec "{sys.executable}" "$@"')
    p = bindir / "python3"
    p.write_text("\n".join(lines) + "\n")
    p.chmod(0o755)


def _env(repo: Path, env_extra: dict | None) -> dict:
    """A bare environment: the stand-in python3 first on PATH, then the system's directories."""
    return {"PATH": f"{repo.parent / 'bin'}:/usr/bin:/bin", "HOME": str(repo.parent), **(env_extra or {})}


def _source(repo: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = _env(repo, env_extra)
    return subprocess.run(["bash", "-c", 'set -euo pipefail; source scripts/python.sh; echo "PY=$PY"; '
                                         'echo "PYTHON=$PYTHON"'],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)


def _py(out: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("PY=")]
    assert lines, out.stdout + out.stderr
    return lines[0][3:]


def test_python_env_var_wins(checkout):
    _fake_python3(checkout.parent / "bin", "no externally managed (PEP 668): pip refuses to install into it")
    out = _source(checkout, {"PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr
    assert _py(out) == sys.executable and f"PYTHON={sys.executable}" in out.stdout
    assert not (checkout / ".venv").exists()


def test_an_installable_python3_is_used_as_it_is(checkout):
    _fake_python3(checkout.parent / "bin", "yes its site-packages is writable")
    out = _source(checkout)
    assert out.returncode == 0, out.stderr
    assert _py(out) == str(checkout.parent / "bin" / "python3")
    assert "writable" in out.stdout and not (checkout / ".venv").exists()


def test_an_active_virtual_environment_is_used(checkout, tmp_path):
    _fake_python3(checkout.parent / "bin", "no externally managed (PEP 668): pip refuses to install into it")
    out = _source(checkout, {"VIRTUAL_ENV": str(tmp_path / "somevenv")})
    assert out.returncode == 0, out.stderr
    assert _py(out) == str(checkout.parent / "bin" / "python3")
    assert "active virtual environment" in out.stdout and not (checkout / ".venv").exists()


def test_an_externally_managed_python3_gets_a_venv_once_and_keeps_it(checkout):
    _fake_python3(checkout.parent / "bin", "no externally managed (PEP 668): pip refuses to install into it")
    first = _source(checkout)
    assert first.returncode == 0, first.stderr
    venv_py = checkout / ".venv" / "bin" / "python"
    assert _py(first) == str(venv_py) and venv_py.exists()
    assert "making a virtual environment in .venv" in first.stdout
    cfg = (checkout / ".venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg  # a torch installed there stays importable, and is kept
    # the venv runs and takes installs
    check = subprocess.run([str(venv_py), str(checkout / "scripts" / "pick_python.py")], capture_output=True,
                           text=True, check=True)
    assert check.stdout.startswith("yes a virtual environment")
    stamp = (checkout / ".venv" / "pyvenv.cfg").stat().st_mtime_ns
    second = _source(checkout)  # idempotent: the same venv, found, not made again
    assert second.returncode == 0, second.stderr
    assert _py(second) == str(venv_py) and "made by an earlier run" in second.stdout
    assert "making a virtual environment" not in second.stdout
    assert (checkout / ".venv" / "pyvenv.cfg").stat().st_mtime_ns == stamp


def test_a_failed_venv_is_a_clear_error_and_leaves_nothing(checkout):
    _fake_python3(checkout.parent / "bin", "no externally managed (PEP 668): pip refuses to install into it",
                  venv_fails=True)
    out = _source(checkout)
    assert out.returncode == 1
    assert "python3-venv" in out.stderr and "PYTHON=" in out.stderr, out.stderr
    assert not (checkout / ".venv").exists()


def test_a_too_old_python3_is_a_clear_error(checkout):
    _fake_python3(checkout.parent / "bin", "no Python 3.8.10 is older than prompt-tree's minimum 3.10", exit_code=2)
    out = _source(checkout)
    assert out.returncode == 1
    assert "3.8.10 is older" in out.stderr and "PYTHON=" in out.stderr, out.stderr


def test_no_python3_at_all_is_a_clear_error(checkout, tmp_path):
    env = {"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path)}  # an empty bin: no python3 anywhere
    out = subprocess.run(["/bin/bash", "-c", "source scripts/python.sh; echo reached"], cwd=checkout, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "reached" not in out.stdout
    assert "no python3 on PATH" in out.stderr


def test_the_readme_scripts_all_source_the_picker():
    """setup.sh, run.sh and test.sh use the one picker (each rule once), and run / test hand its choice on."""
    for name in ("setup.sh", "run.sh", "test.sh"):
        text = (SCRIPTS / name).read_text()
        assert "source scripts/python.sh" in text, name
        assert "PY=${PYTHON:-python3}" not in text, name


# ----- scripts/setup.sh's torch install, with a python3 that logs what it is asked instead of installing


def _logging_python3(bindir: Path, log: Path, cpu_index_rc: int) -> None:
    """python3 that takes installs, has nothing installed (every `-c` import fails), logs each pip call to `log`
    and answers a pip call naming --index-url with cpu_index_rc (0 = the CPU index had the build)."""
    script = f"""#!/bin/sh
if [ "$1" = scripts/pick_python.py ]; then echo "yes its site-packages is writable"; exit 0; fi
if [ "$1" = -c ]; then exit 1; fi
if [ "$1" = -m ] && [ "$2" = pip ]; then
    [ "$3" = show ] && exit 1
    echo "$*" >> "{log}"
    case "$*" in *--index-url*) exit {cpu_index_rc};; esac
    exit 0
fi
exit 0
"""
    p = bindir / "python3"
    p.write_text(script)
    p.chmod(0o755)


def _setup(repo: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    (repo / "pyproject.toml").write_text("")
    return subprocess.run(["bash", "scripts/setup.sh", "test"], cwd=repo, env=_env(repo, env_extra), capture_output=True, text=True,
                          timeout=60)


def _gpu_visible() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi", path="/usr/bin:/bin") \
        is not None


@pytest.mark.skipif(_gpu_visible(), reason="an NVIDIA driver is visible: setup.sh takes the configured index")
@pytest.mark.parametrize("cpu_index_rc", [0, 1])
def test_setup_asks_the_cpu_index_first_without_a_gpu(checkout, cpu_index_rc):
    log = checkout.parent / "pip.log"
    _logging_python3(checkout.parent / "bin", log, cpu_index_rc)
    out = _setup(checkout)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = log.read_text().splitlines()
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in calls[0]
    torch_calls = [c for c in calls if "torch==" in c]
    if cpu_index_rc == 0:
        assert len(torch_calls) == 1  # the CPU build came: no second try
    else:  # out of reach: the configured index, and a message saying so
        assert len(torch_calls) == 2 and "--index-url" not in torch_calls[1]
        assert "gave no torch==2.13.0" in out.stdout
    assert calls[-1].startswith("-m pip install --progress-bar on -e .[test]")
    assert (checkout / ".setup-stamp").exists()


def test_setup_skips_the_cpu_index_when_told(checkout):
    log = checkout.parent / "pip.log"
    _logging_python3(checkout.parent / "bin", log, 1)
    out = _setup(checkout, {"TORCH_CPU_INDEX": "", "TORCH_VERSION": "2.11.0"})
    assert out.returncode == 0, out.stdout + out.stderr
    torch_calls = [c for c in log.read_text().splitlines() if "torch==" in c]
    assert torch_calls == ["-m pip install --progress-bar on torch==2.11.0"]
