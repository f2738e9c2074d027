"""`python3 -m backend.selftest` runs its ladder against the fake driver, and on a machine without Tegra nodes says so in
one line and exits non-zero."""
import os, subprocess, sys
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def selftest(*args):
  env = {**os.environ, "PYTHONPATH": ROOT}
  env.pop("DEV", None)
  return subprocess.run([sys.executable, "-m", "backend.selftest", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)

def test_selftest_ladder_passes_on_the_fake_driver():
  p = selftest("--fake")
  assert p.returncode == 0, p.stdout + p.stderr[-2000:]
  lines = p.stdout.strip().splitlines()
  for rung in ["nodes", "open", "alloc/free", "copy round trip", "one kernel", "1000 signals", "TinyJit graph"]:
    assert any(l.startswith("PASS " + rung) for l in lines), (rung, lines)
  assert not any(l.startswith("FAIL") for l in lines)

def test_selftest_without_nodes_says_so_in_one_line():
  if all(os.path.exists(p) for p in ("/dev/nvgpu/igpu0/ctrl", "/dev/nvmap")): return   # on a real Jetson this check does not apply
  p = selftest()
  assert p.returncode != 0
  assert p.stdout.strip().splitlines() == ["FAIL nodes: /dev/nvgpu/igpu0/ctrl is missing -- not a Jetson, or nvgpu/nvmap are not loaded (`lsmod | grep nvgpu`)"]
