"""The fp16 matvec heuristic fix: rendered for sm_87 with the PTX renderer (no GPU, no CUDA toolkit), an fp16 1xN @ NxN
gets tinygrad's MATVEC opts (GROUP, LOCAL, UPCAST) with the fix and only GROUPTOP without it. Also checks that compile
worker processes pick the fix up."""
import os, subprocess, sys, textwrap
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import sys
from tinygrad import Tensor, dtypes
from tinygrad.uop.ops import Ops
from tinygrad.renderer.ptx import PTXRenderer
from tinygrad.helpers import Target
import backend
from backend import matvec
if sys.argv[1] == "fix": backend.install_matvec_fix()
ren = PTXRenderer(Target("CUDA", "PTX", "sm_87"))
dt = {"half": dtypes.half, "float": dtypes.float}[sys.argv[2]]
x, w = Tensor.empty(1, 1024, dtype=dt), Tensor.empty(1024, 1024, dtype=dt)
out = x @ w if sys.argv[3] == "plain" else (x * Tensor.empty(1, 1024, dtype=dt)) @ w
asts = [c.src[0] for c in out.schedule_linear().toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK]
print(sorted({o.op.name for a in asts for o in matvec.applied_opts(a, ren)}))
"""

def opts(*args) -> str:
  p = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, env={**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, "MATVEC_FIX": "0"},
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  return p.stdout.strip().splitlines()[-1]

def test_fp16_matvec_gets_matvec_opts_only_with_the_fix():
  assert opts("nofix", "half", "plain") == "['GROUPTOP']"
  assert opts("fix", "half", "plain") == "['GROUP', 'LOCAL', 'UPCAST']"

def test_fp32_matvec_unchanged_by_the_fix():
  # tinygrad already handles MUL(INDEX, INDEX): the fix must leave that choice alone
  assert opts("nofix", "float", "plain") == opts("fix", "float", "plain") == "['GROUP', 'LOCAL', 'UPCAST']"

def test_fused_scale_then_matvec_gets_matvec_opts():
  # (x * s) @ w reduces MUL(MUL(x, s), w) once fused: the MUL chain is looked through
  assert opts("fix", "half", "fused") == "['GROUP', 'LOCAL', 'UPCAST']"

def test_compile_workers_apply_the_fix():
  code = textwrap.dedent("""
    import backend
    backend.install_matvec_fix()
    from tinygrad.engine.worker import get_worker_pool
    from backend import matvec
    pool = get_worker_pool()
    print(pool.apply(matvec.is_installed))
    pool.terminate()
  """)
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, "PARALLEL": "1"},
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert p.stdout.strip().splitlines()[-1] == "True"
