"""backend/patches/program_cache.py: a second process finds every lowered kernel of a JIT'd training step on disk and
computes the same numbers; what changes a program changes the key; BEAM's kernels and PROGRAM_CACHE=0 store nothing."""
import json, os, subprocess, sys, textwrap
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEP = textwrap.dedent("""
  import json, os
  import common
  from tinygrad import Tensor, TinyJit, nn
  from tinygrad.helpers import Context
  from tinygrad.nn.state import get_parameters
  from backend.patches import program_cache
  Tensor.manual_seed(0)
  conv = nn.Conv2d(3, 4, 3, padding=1)
  opt = nn.optim.SGD(get_parameters(conv), lr=0.1)
  @TinyJit
  def step(x, y):
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = (conv(x).relu().mean(axis=(2, 3)) - y).square().mean()
      loss.backward()
      opt.step()
    return loss.realize()
  x, y = Tensor.randn(2, 3, 6, 6).realize(), Tensor([[0.5, -0.2, 0.1, 0.3]]).realize()
  losses = [step(x, y).item() for _ in range(3)]
  print(json.dumps({"losses": losses, "weight": conv.weight.numpy().ravel()[:8].tolist(), **program_cache.stats()}))
""")


def run_step(db, **env):
  e = {k: v for k, v in os.environ.items() if k not in ("DEV", "BEAM", "JITBEAM", "PROGRAM_CACHE", "DEBUG")}
  p = subprocess.run([sys.executable, "-c", STEP], cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env={**e, "DEV": "CPU", "PYTHONPATH": ROOT, "PARALLEL": "0", "CACHEDB": str(db), **env})
  assert p.returncode == 0, p.stderr[-3000:]
  return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_run_lowers_nothing_and_computes_the_same_numbers(tmp_path):
  first = run_step(tmp_path / "c.db")
  second = run_step(tmp_path / "c.db")
  assert first["stored"] >= 4 and first["hits"] == 0, first             # forward, backward and the update
  assert second["hits"] == first["stored"] and second["stored"] == 0, second
  assert second["losses"] == first["losses"] and second["weight"] == first["weight"]
  assert first["losses"][2] < first["losses"][0]                           # it trains
  # a knob the heuristic patches read makes its own entries; so does PROGRAM_CACHE=0 make none
  other = run_step(tmp_path / "c.db", TILES="0")
  assert other["hits"] == 0 and other["stored"] == first["stored"], other
  off = run_step(tmp_path / "c.db", PROGRAM_CACHE="0")
  assert off["hits"] == off["stored"] == 0 and off["losses"] == first["losses"]
  debug = run_step(tmp_path / "c.db", DEBUG="3")                            # DEBUG >= 3 prints each kernel's opts and source
  assert debug["hits"] == debug["stored"] == 0


def test_key_follows_what_changes_a_program(monkeypatch):
  import common  # noqa: F401
  from tinygrad import Device
  from tinygrad.helpers import Context
  from backend.patches import program_cache as pc
  ren = Device["CPU"].renderer
  key = (b"\x01" * 32, type(ren), ren.target, 0, 0)
  base = pc.disk_key(key, ren)
  assert pc.disk_key(key, ren) == base
  assert pc.disk_key((b"\x02" * 32, *key[1:]), ren) != base                 # another AST
  with Context(TRAINING=1): assert pc.disk_key(key, ren) != base             # any ContextVar, as it is now
  from tinygrad.codegen.opt import heuristic
  monkeypatch.setattr(heuristic, "hand_coded_optimizations", lambda k: k)      # a heuristic of one's own
  assert pc.disk_key(key, ren) != base
  monkeypatch.undo()
  monkeypatch.setenv("MV_BLOCKSIZE", "8")                                    # a tinygrad heuristic knob read with getenv
  assert "MV_BLOCKSIZE" in pc._env_names() and pc.disk_key(key, ren) != base
  monkeypatch.delenv("MV_BLOCKSIZE")
  monkeypatch.setenv("DEBUG", "2")                                           # printing does not change a program
  assert pc.disk_key(key, ren) == base
  with Context(DEV=["CPU"]): assert pc.disk_key(key, ren) == base            # nor the default device: the renderer says which
  from tinygrad.helpers import ContextVar
  if "PC_TEST_RUNTIME_ONLY" not in ContextVar._cache: ContextVar("PC_TEST_RUNTIME_ONLY", 1)   # like ops_amd's SQTT: not every process has it
  assert pc.disk_key(key, ren) == base


@pytest.mark.parametrize("beam, cachekey, storable", [(0, "compile_clang_jit", True), (2, "compile_clang_jit", False), (0, None, False)])
def test_beam_kernels_and_compilers_without_a_disk_cache_are_not_stored(beam, cachekey, storable):
  from types import SimpleNamespace
  from tinygrad.uop.ops import UOp, Ops, KernelInfo
  from backend.patches import program_cache as pc
  renderer = SimpleNamespace(compiler=SimpleNamespace(cachekey=cachekey))    # None: CCACHE=0, or the fake Orin's compiler
  assert pc._storable(UOp(Ops.SINK, arg=KernelInfo(beam=beam)), renderer) is storable


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_run(monkeypatch, capsys):
  import random
  import common  # noqa: F401
  import numpy as np
  from tinygrad import Tensor, helpers
  from backend.patches import program_cache as pc
  if not pc.enabled(): pytest.skip("the program cache is off in this environment (PROGRAM_CACHE=0 or CACHELEVEL=0)")
  def refuse(*a, **k): raise OSError("database or disk is full")
  monkeypatch.setattr(helpers, "diskcache_put", refuse)
  monkeypatch.setitem(pc._state, "warned", False)
  c = random.randint(2, 10**6)                                               # a kernel no earlier run has lowered
  assert np.array_equal((Tensor.arange(5) * c + 1).numpy(), np.arange(5) * c + 1)
  assert "warning: program cache not written: database or disk is full" in capsys.readouterr().err


QUEUE = textwrap.dedent("""
  import json
  import common
  from tinygrad import Device, Tensor
  from backend.patches import program_cache
  Device["CPU"]
  print(json.dumps({"sum": (Tensor.arange(6) * 2).sum().item(), **program_cache.queue_program_stats()}))
""")


def test_the_cpu_devices_queue_programs_are_lowered_once(tmp_path):
  # every process that opens the CPU lowers its four queue programs (signal, wait, timestamp, worker): 0.3 s each time
  def run(**env):
    e = {k: v for k, v in os.environ.items() if k not in ("DEV", "PROGRAM_CACHE", "DEBUG")}
    p = subprocess.run([sys.executable, "-c", QUEUE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**e, "DEV": "CPU", "PYTHONPATH": ROOT, "CACHEDB": str(tmp_path / "q.db"), **env})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])
  assert run() == {"sum": 30, "hits": 0, "lowered": 4}
  assert run() == {"sum": 30, "hits": 4, "lowered": 0}
  assert run(PROGRAM_CACHE="0") == {"sum": 30, "hits": 0, "lowered": 0}     # not installed: tinygrad lowers them, uncounted
