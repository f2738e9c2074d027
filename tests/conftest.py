import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

# tinygrad compiles kernels in the process itself, here and in every script a test starts: on two cores its default
# pool of compile workers (one per core, restarted every 16 kernels with cold caches, inside each of the two
# pytest-xdist workers) measured 1.5x slower than none (tests/test_generative.py). A test that needs the pool sets
# PARALLEL itself.
os.environ.setdefault("PARALLEL", "0")


def run_py(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
  """Run `python3 <args>` from the repo root with a clean device environment plus `env`."""
  base = {k: v for k, v in os.environ.items() if k not in ("DEV", "NV", "CUDA", "CPU", "CLANG", "LLVM", "JITBEAM", "BEAM", "DEBUG")}
  return subprocess.run([sys.executable, *args], cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
  """Exit status 2, no traceback, the message on one line containing every fragment."""
  assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
  assert "Traceback" not in r.stderr, r.stderr
  lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
  assert len(lines) == 1, r.stderr
  for f in fragments: assert f in lines[0], (f, lines[0])


@pytest.fixture
def repo_root() -> Path:
  return ROOT


def bad_input(*args: str, fragments: tuple[str, ...] = (), env: dict | None = None, timeout: float = 300) -> str:
  """Run `python3 <args>` and assert it refused the input as the project's rules say: exit status 2,
  exactly one line on stderr (warnings aside), no traceback, every fragment in that line. -> the line."""
  r = run_py(*args, env=env, timeout=timeout)
  assert_one_line_error(r, *fragments)
  return [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")][0]


def png_claiming(path, width, height):
  """A valid 1x1 PNG whose IHDR then claims width x height (a decompression bomb's header)."""
  import struct, zlib
  from PIL import Image
  Image.new("L", (1, 1)).save(path)
  raw = bytearray(path.read_bytes())
  ihdr = raw[12:29]                                     # b"IHDR" + 13 bytes of data
  ihdr[4:12] = struct.pack(">II", width, height)
  raw[12:29] = ihdr
  raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
  path.write_bytes(bytes(raw))


# The suite's long poles (minutes each on 2 cores), started first so that pytest-xdist packs the short tests
# around them instead of leaving one worker alone with a long test at the end; then every other slow test.
LONG_POLES = ("test_generative.py::test_quick_run_passes", "test_backend_fake_project.py::test_reinforce_quick_run",
              "test_edge_model_zoo.py::test_quick_bench_json")


def pytest_collection_modifyitems(config, items):
  def order(item) -> int:
    if any(p in item.nodeid for p in LONG_POLES): return 0
    return 1 if item.get_closest_marker("slow") else 2
  items.sort(key=order)
