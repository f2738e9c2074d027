"""`python3 -m backend.selftest` runs its ladder against the fake driver, and on a machine without Tegra nodes says so in
one line and exits non-zero."""
import os, subprocess, sys
import pytest
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def selftest(*args):
  env = {**os.environ, "PYTHONPATH": ROOT}
  env.pop("DEV", None)
  return subprocess.run([sys.executable, "-m", "backend.selftest", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)

@pytest.mark.slow
def test_selftest_ladder_passes_on_the_fake_orin_and_writes_a_complete_report(tmp_path):
  p = selftest("--fake", "--report", str(tmp_path / "report.md"))
  assert p.returncode == 0, p.stdout + p.stderr[-2000:]
  lines = p.stdout.strip().splitlines()
  for rung in ["nodes", "open", "alloc/free", "copy round trip", "one kernel", "1000 signals", "ring wrap", "copy-ins", "TinyJit graph",
               "1 GiB allocation", "compute vs CPU", "matmul vs numpy", "GPU L2 caching"]:
    assert any(line.startswith("PASS " + rung) for line in lines), (rung, lines)
  assert not any(line.startswith("FAIL") for line in lines)
  report = (tmp_path / "report.md").read_text()
  for part in ["# Tegra backend self-test report", "## Self-test ladder", "PASS GPU L2 caching", "## Device report", "## Microbenchmarks"]:
    assert part in report, part

def test_selftest_without_nodes_says_so_in_one_line():
  if all(os.path.exists(p) for p in ("/dev/nvgpu/igpu0/ctrl", "/dev/nvmap")): return   # on a real Jetson this check does not apply
  p = selftest()
  assert p.returncode != 0
  want = "FAIL nodes: /dev/nvgpu/igpu0/ctrl is missing -- not a Jetson, or nvgpu/nvmap are not loaded (`lsmod | grep nvgpu`)"
  assert p.stdout.strip().splitlines() == [want]


def test_an_unwritable_report_path_is_refused_before_the_ladder(tmp_path):
  for path, why in ((tmp_path / "no" / "r.md", "does not exist"), (tmp_path, "is a folder"), ("/proc/r.md", "cannot be written")):
    p = subprocess.run([sys.executable, "-m", "backend.selftest", "--fake", "--report", str(path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1 and why in p.stderr, (path, p.stdout, p.stderr)
