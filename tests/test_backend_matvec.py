"""The fp16 matvec fix: rendered for sm_87 with the PTX renderer (no GPU, no CUDA toolkit), an fp16 1xN @ NxN gets the
vector layout with the fix (UNROLL 8 halves = one 16-byte load per thread, GROUP 32 threads per row) and only GROUPTOP
without it. Also checks that compile worker processes pick the fix up."""
import os, subprocess, sys, textwrap
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import sys
from tinygrad import Tensor, dtypes
from tinygrad.uop.ops import Ops
from tinygrad.renderer.ptx import PTXRenderer
from tinygrad.helpers import Target
import backend
from backend.patches import matvec
if sys.argv[1] == "fix": backend.install_matvec_fix()
ren = PTXRenderer(Target("CUDA", "PTX", "sm_87"))
dt = {"half": dtypes.half, "float": dtypes.float}[sys.argv[2]]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
x, w = Tensor.empty(1, n, dtype=dt), Tensor.empty(n, 1024, dtype=dt)
out = x @ w if sys.argv[3] == "plain" else (x * Tensor.empty(1, n, dtype=dt)) @ w
asts = [c.src[0] for c in out.schedule_linear().toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK]
print([(o.op.name, o.arg) for a in asts for o in matvec.applied_opts(a, ren)])
"""

def opts(*args) -> str:
  p = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, env={**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, "MATVEC_FIX": "0"},
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  return p.stdout.strip().splitlines()[-1]

VECTOR = "[('UNROLL', 8), ('GROUP', 32)]"     # 8 halves per load, 32 threads per row

def test_fp16_matvec_gets_vector_loads_only_with_the_fix():
  assert opts("nofix", "half", "plain") == "[('GROUPTOP', 16)]"
  assert opts("fix", "half", "plain") == VECTOR

def test_fp32_matvec_unchanged_by_the_fix():
  # tinygrad's own MATVEC rule handles MUL(INDEX, INDEX) in fp32: the fix must leave that choice alone
  assert opts("nofix", "float", "plain") == opts("fix", "float", "plain")
  assert "GROUP" in opts("fix", "float", "plain") and "UNROLL" not in opts("fix", "float", "plain")

def test_fused_scale_then_matvec_gets_vector_loads():
  # (x * s) @ w reduces MUL(MUL(x, s), w) once fused: the MUL chain is looked through
  assert opts("fix", "half", "fused") == VECTOR

def test_short_rows_get_fewer_threads_and_odd_rows_none():
  assert opts("fix", "half", "plain", "128") == "[('UNROLL', 8), ('GROUP', 16)]"     # 128 = 16 threads x 8 halves
  assert opts("fix", "half", "plain", "100") == opts("nofix", "half", "plain", "100")   # not a multiple of 8: tinygrad's choice

def test_compile_workers_apply_the_fix():
  code = textwrap.dedent("""
    import backend
    backend.install_matvec_fix()
    from tinygrad.engine.worker import get_worker_pool
    from backend.patches import matvec
    pool = get_worker_pool()
    print(pool.apply(matvec.is_installed))
    pool.terminate()
  """)
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, "PARALLEL": "1"},
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert p.stdout.strip().splitlines()[-1] == "True"
