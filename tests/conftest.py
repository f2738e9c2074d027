import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

# tinygrad compiles kernels in the process itself, here and in every script a test starts: on two cores its default
# pool of compile workers (one per core, restarted every 16 kernels with cold caches, inside each of the two
# pytest-xdist workers) measured 1.5x slower than none (tests/test_generative.py). A test that needs the pool sets
# PARALLEL itself.
os.environ.setdefault("PARALLEL", "0")


@pytest.fixture(autouse=True)
def _unoptimized_kernels(request, monkeypatch):
  """Tests in this process compile tinygrad's kernels without its optimizations (NOOPT=1): the same sums in the same
  dtypes, and about 40 % less compile time on the 2-core CPU (the style-transfer gradient and conv tests: 107 s ->
  61 s). A test marked `opts` keeps them: one that checks what they do through tinygrad's normal lowering. The
  heuristic patches' tests call the heuristic themselves or run in a subprocess. Every script a test starts runs as
  a user runs it, with the optimizations (the setting lives in this process, not in the environment), unless the test
  is marked `noopt`: a script run that compiles far more than it computes, whose records or checks the test reads,
  not its speed. Its environment gets NOOPT=1, which is part of the program cache's keys: a test that reuses such a
  run's kernels carries the marker too (the zoo's numpy checks). Chosen by measurement (fresh-clone runs): the zoo's
  quick bench 79 s -> 59 s, the audio bench 28 s -> 13 s, the autoencoder bench 30 s -> 19 s. A run that computes for
  long keeps the optimizations (with NOOPT=1 for every script, the RL, audio and edge demos ran 10-30 s slower each), and so
  does one whose kernels a later test takes from the program cache (the generative --quick demo: 46 s saved there
  cost 44 s in the autoencoder run after it)."""
  if request.node.get_closest_marker("noopt"): monkeypatch.setenv("NOOPT", "1")
  if request.node.get_closest_marker("opts"):
    yield
    return
  from tinygrad.helpers import Context
  with Context(NOOPT=1): yield


CLEARED = ("DEV", "NV", "CUDA", "CPU", "CLANG", "LLVM", "JITBEAM", "BEAM", "DEBUG")
DEVICE_CHOICE = ("DEV", "NV", "CUDA", "CPU", "CLANG", "LLVM", "AMD", "METAL", "CL", "PYTHON", "NULL", "TEGRA_FAKE")


def run_py(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
  """Run `python3 <args>` from the repo root with a clean device environment plus `env`. DEV=CPU unless `env` names a
  device: with no DEV, tinygrad probes every backend before it settles on the CPU (0.45 s of each process here)."""
  base = {k: v for k, v in os.environ.items() if k not in CLEARED}
  if not any(k in DEVICE_CHOICE for k in [*(env or {}), *base]): base["DEV"] = "CPU"   # an outer TEGRA_FAKE=1 is kept
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


# The order of the suite. pytest-xdist's worksteal scheduler hands the first half of this list to one worker and the
# second half to the other, each run in order (an idle worker later steals from the end of the other's queue). Tests
# that build the same kernels share them through the program cache (backend/patches/program_cache.py, in CACHEDB)
# when one starts after the other has finished: ResNet-18's numpy check after the zoo bench took 4.6 s in a fresh-clone
# run against 12.8 s before it. Each lane heads one half: the suite's long tests (minutes each on 2 cores) first, then
# the tests that reuse their kernels; every other test fills the halves, slow ones first, dealt in turn.
LANES = (
  ("test_generative.py::test_quick_run_passes", "test_generative.py::test_documented_autoencoder_train_steps"),
  ("test_edge_model_zoo.py::test_quick_bench_json", "test_edge_model_zoo.py::test_model_matches_numpy",
   "test_edge_model_zoo.py::test_big_model_matches_numpy", "test_backend_fake_project.py::test_reinforce_quick_run",
   "test_edge_deploy.py::test_quick_demo_passes", "test_edge_deploy.py::test_quantize_runs_alone",      # the demo's CNN is the teacher
   "test_edge_deploy.py::test_bench_json_validates"),
)


def lane_of(nodeid: str) -> tuple[int, int] | None:
  """(lane, position in it) of a test, or None."""
  for lane, fragments in enumerate(LANES):
    for pos, f in enumerate(fragments):
      if f in nodeid: return lane, pos
  return None


def pytest_collection_modifyitems(config, items):
  lanes: list[list] = [[] for _ in LANES]
  rest = []
  for item in items:
    where = lane_of(item.nodeid)
    if where is None: rest.append(item)
    else: lanes[where[0]].append((where[1], item))
  halves = [[it for _, it in sorted(lane, key=lambda t: t[0])] for lane in lanes]
  rest.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)
  first_size = len(items) // 2                       # worksteal's first share
  for item in rest:                                   # dealt in turn, as long as the first half has room
    target = 0 if len(halves[0]) <= len(halves[1]) and len(halves[0]) < first_size else 1
    halves[target].append(item)
  while len(halves[0]) < first_size: halves[0].append(halves[1].pop())   # only when a lane is longer than half the suite
  items[:] = halves[0] + halves[1]
