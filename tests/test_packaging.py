"""Packaging facts that must not drift: one tinygrad version everywhere, a flake that parses, the
set-up script's promises."""
import re, shutil, subprocess, sys
import pytest
from conftest import ROOT

if sys.version_info >= (3, 11): import tomllib


def pyproject():
  return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_tinygrad_pinned_in_pyproject():
  deps = pyproject()["project"]["dependencies"]
  assert "tinygrad==0.14.0" in deps
  assert pyproject()["project"]["requires-python"] == ">=3.11"


def test_flake_pins_the_same_tinygrad():
  flake = (ROOT / "flake.nix").read_text()
  m = re.search(r'tinygradVersion = "([^"]+)"', flake)
  pinned = next(d.split("==")[1] for d in pyproject()["project"]["dependencies"] if d.startswith("tinygrad=="))
  assert m and m.group(1) == pinned
  assert re.search(r'tinygradWheelHash = "sha256-[A-Za-z0-9+/]{43}="', flake), "the wheel needs its real SRI hash"


def test_flake_parses():
  if not shutil.which("nix-instantiate"):
    pytest.skip("nix-instantiate not installed (Debian: apt-get install nix-bin; scripts/dev.sh installs it when root)")
  r = subprocess.run(["nix-instantiate", "--parse", str(ROOT / "flake.nix")], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr


def test_installed_version_is_the_pinned_one():
  from importlib.metadata import version
  assert version("tinygrad") == "0.14.0"


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  assert "bash scripts/dev.sh test" in readme and "bash scripts/dev.sh tour" in readme
  assert "scripts/dev.sh test" in ci


def test_runtime_imports_only_pinned_dependencies():
  """common/ may import only the runtime dependencies (and the standard library)."""
  allowed = {"tinygrad", "numpy", "PIL", "soundfile", "matplotlib", "common", "backend"}
  for path in (ROOT / "common").glob("*.py"):
    for mod in re.findall(r"^\s*(?:from|import) ([A-Za-z_][\w]*)", path.read_text(), re.M):
      if mod in allowed or mod in sys.stdlib_module_names or mod == "__future__": continue
      raise AssertionError(f"{path.name} imports {mod}, which is not a pinned runtime dependency")
