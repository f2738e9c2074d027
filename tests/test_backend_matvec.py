"""The fp16 matvec fix: rendered for sm_87 with the PTX renderer (no GPU, no CUDA toolkit), an fp16 1xN @ NxN gets the
vector layout with the fix (UNROLL 8 halves = one 16-byte load per thread, GROUP 32 threads per row) and only GROUPTOP
without it. Also checks that compile worker processes pick the fix up, and that GGUF matvecs (packed codes dequantized
in the kernel, edge-deploy/gguf_weights.py) get 16-byte loads and 32 threads per row with the fix, with the same numbers
on tinygrad's PYTHON device, which runs GPU threads one by one."""
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


# ---- GGUF matvecs: packed codes dequantized in the kernel (edge-deploy/gguf_weights.py) --------------------------

GGUF_SCRIPT = """
import json, math, os, re, sys
sys.path.insert(0, "edge-deploy")
import numpy as np
from tinygrad import Tensor
from tinygrad.uop.ops import Ops
from tinygrad.renderer.ptx import PTXRenderer
from tinygrad.helpers import Target
from tinygrad.codegen import to_program
import backend
if sys.argv[1] == "fix": backend.install_matvec_fix()
import gguf_file as gf, gguf_weights as gw
ren = PTXRenderer(Target("CUDA", "PTX", "sm_87"))
R, K = int(os.environ.get("ROWS", 2048)), 2048     # LLaMA 3.2 1B's q projection (ROWS=16384: its gate|up)
out = {}
for kind in sys.argv[2:]:
  per, nbytes = gf.BLOCKS[kind]
  w = gw.weight_from_parts(kind, (R, K), gf.split_blocks(kind, np.zeros(R * K // per * nbytes, np.uint8), (R, K)))
  y = gw.linear(Tensor.empty(1, K), w)
  (ast,) = [c.src[0] for c in y.schedule_linear().src if c.op is Ops.CALL and c.src[0].op is Ops.SINK]
  prg = to_program(ast, ren)                      # PTX for sm_87 is text: no GPU, no CUDA toolkit
  sink, src = prg.src[0], prg.src[2].arg
  groups = [o.arg for o in sink.arg.applied_opts if o.op.name in ("GROUP", "GROUPTOP")]
  out[kind] = {"opts": [(o.op.name, o.arg) for o in sink.arg.applied_opts], "threads_per_row": math.prod(groups),
               "v4_u32": len(re.findall(r"ld\\.global\\.v4\\.u32", src)), "byte_loads": len(re.findall(r"ld\\.global\\.[us]8", src)),
               "cvt_per_code": len(re.findall(r"cvt\\.rn\\.f32\\.u32", src)), "mem": int(sink.arg.estimates.mem), "packed": w.nbytes()}
print(json.dumps(out))
"""

PACKED = ("Q8_0", "Q4_0", "Q4_K", "Q6_K")

def gguf_layout(fix: str, *kinds: str, rows: int = 2048) -> dict:
  import json
  env = {**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, "MATVEC_FIX": "0", "ROWS": str(rows)}
  p = subprocess.run([sys.executable, "-c", GGUF_SCRIPT, fix, *kinds], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  return json.loads(p.stdout.strip().splitlines()[-1])

def test_gguf_matvecs_get_16_byte_loads_and_32_threads_per_row_with_the_fix():
  for kind, k in gguf_layout("fix", *PACKED).items():
    assert k["threads_per_row"] == 32, (kind, k)
    assert k["v4_u32"] >= 1 and k["byte_loads"] <= 6, (kind, k)   # codes as uint32 x 4 = 16 bytes (Q4_K: 6 bytes of scales)
    assert k["cvt_per_code"] == 0, (kind, k)                        # floats from bits (gguf_weights.code_minus)
    assert k["mem"] == k["packed"] + 2 * 2048 * 4, (kind, k)         # W's packed bytes, x and y, once
  assert gguf_layout("fix", "Q8_0")["Q8_0"]["opts"] == [["UNROLL", 4], ["UNROLL", 4], ["GROUP", 32]]   # 4 bytes x 4 words

def test_gguf_matvecs_without_the_fix_get_tinygrads_layout():
  # what the H200 ran before the fix: 16 threads and scalar loads (Q8_0), one thread per 4 rows of a K-quant
  stock = gguf_layout("nofix", "Q8_0", "Q4_K")
  assert stock["Q8_0"]["opts"] == [["GROUPTOP", 16]] and stock["Q8_0"]["v4_u32"] == 0
  assert stock["Q4_K"]["threads_per_row"] == 1

def test_gguf_matvec_layout_computes_the_same_numbers_on_emulated_gpu_threads():
  # tinygrad's PYTHON device runs the kernel thread by thread, with local ids and shared memory as on a GPU: the
  # layout (several GROUP axes whose partial sums meet in shared memory) must not change the result
  code = textwrap.dedent("""
    import math, sys
    sys.path.insert(0, "edge-deploy")
    import numpy as np
    import backend
    backend.install_matvec_fix()
    from tinygrad import Tensor, Device
    from tinygrad.uop.ops import Ops
    from backend.patches import matvec
    import gguf_file as gf, gguf_weights as gw
    rng = np.random.default_rng(0)
    R, K = 3, 2048
    for kind in sys.argv[1:]:
      per, nbytes = gf.BLOCKS[kind]
      parts = gf.split_blocks(kind, rng.integers(0, 256, size=R * K // per * nbytes, dtype=np.uint8), (R, K))
      for scale in ("d", "dmin"):                  # random codes, block scales of a real model's size
        if scale in parts: parts[scale] = rng.uniform(0.005, 0.015, size=parts[scale].shape).astype(np.float16)
      x, w = rng.standard_normal((1, K)).astype(np.float32), gw.weight_from_parts(kind, (R, K), parts)
      (ast,) = [c.src[0] for c in gw.linear(Tensor.empty(1, K), w).schedule_linear().src if c.op is Ops.CALL and c.src[0].op is Ops.SINK]
      groups = [o.arg for o in matvec.applied_opts(ast, Device[Device.DEFAULT].renderer) if o.op.name == "GROUP"]
      y = gw.linear(Tensor(x), w).numpy()
      ref = x.astype(np.float64) @ gf.dequantize_parts(kind, parts).astype(np.float64).T
      print(kind, math.prod(groups), float(np.abs(y - ref).max() / np.abs(ref).max()))
  """)
  p = subprocess.run([sys.executable, "-c", code, *PACKED], cwd=ROOT, env={**os.environ, "DEV": "PYTHON", "PYTHONPATH": ROOT, "MATVEC_FIX": "0"},
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  runs = {kind: (int(threads), float(err)) for kind, threads, err in (line.split() for line in p.stdout.strip().splitlines()[-len(PACKED):])}
  assert set(runs) == set(PACKED) and all(threads == 32 and err < 1e-5 for threads, err in runs.values()), runs


# ---- long sums with few outputs: split_reduce_opts (a training step's skinny products) --------------------------

SPLIT_SCRIPT = """
import json, sys
from tinygrad import Tensor
from tinygrad.uop.ops import Ops
from tinygrad.renderer.ptx import PTXRenderer
from tinygrad.helpers import Target
import backend
from backend.patches import matvec
if sys.argv[1] == "fix": backend.install_matvec_fix()
ren = PTXRenderer(Target("CUDA", "PTX", "sm_87"))
out = {}
for spec in sys.argv[2:]:
  m, k, n = (int(v) for v in spec.split("x"))
  y = Tensor.empty(m, k) @ Tensor.empty(k, n)
  (ast,) = [c.src[0] for c in y.schedule_linear().src if c.op is Ops.CALL and c.src[0].op is Ops.SINK]
  out[spec] = [(o.op.name, o.arg) for o in matvec.applied_opts(ast, ren)]
print(json.dumps(out))
"""

def split_opts(fix: str, *specs: str, **env) -> dict:
  import json
  env = {**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, "MATVEC_FIX": "0", **env}
  p = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT, fix, *specs], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  return {k: [tuple(o) for o in v] for k, v in json.loads(p.stdout.strip().splitlines()[-1]).items()}

def test_long_sums_with_few_outputs_are_split_over_16_threads_each():
  # the autoencoder's bottleneck, (128 x 4096) @ (4096 x 32): 4,096 outputs of 4,096 terms
  stock, fixed = split_opts("nofix", "128x4096x32")["128x4096x32"], split_opts("fix", "128x4096x32")["128x4096x32"]
  assert not any(op.startswith("GROUP") for op, _ in stock)           # tinygrad: 256 threads, each a serial 4,096-long loop
  assert fixed == [("GROUPTOP", 16)]
  assert split_opts("fix", "128x4096x32", SPLIT_REDUCE="0")["128x4096x32"] == stock

def test_split_keeps_tinygrads_choice_outside_its_bounds():
  specs = ("128x16384x32", "128x1024x32", "8x4096x32", "1024x4096x1024")   # too long, too short, <= 2,048 outputs, many outputs
  # TILES=0: the 16,384-long product is big enough for the tiles rule (test_backend_tiles.py), which re-lays its locals
  assert split_opts("fix", *specs, TILES="0") == split_opts("nofix", *specs)

def test_split_leaves_batch_1_matvecs_to_their_own_layouts():
  # LLaMA 1B's gate|up (16,384 rows) and q|k|v (3,072) are within the split's bounds by size: they keep the vector layout
  assert opts("fix", "half", "plain", "2048") == VECTOR
  for rows in (3072, 16384):
    code = SCRIPT.replace("Tensor.empty(n, 1024, dtype=dt)", f"Tensor.empty(n, {rows}, dtype=dt)")
    p = subprocess.run([sys.executable, "-c", code, "fix", "half", "plain", "2048"], cwd=ROOT,
                       env={**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, "MATVEC_FIX": "0"}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == VECTOR, rows
  packed = gguf_layout("fix", "Q8_0", "Q4_0", rows=16384)
  assert all(k["threads_per_row"] == 32 and k["v4_u32"] >= 1 for k in packed.values()), packed
