"""The tiles rule (backend/patches/tiles.py): the sector model's counts on a matmul worked out by hand, the layouts it
picks for a convolution's kernels rendered for sm_87 (PTX renderer: no GPU, no CUDA toolkit), and the same numbers as
numpy on tinygrad's PYTHON device, which runs GPU threads one by one."""
import json, os, subprocess, sys, textwrap
import pytest
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = """
import json, sys
import numpy as np
from tinygrad import Tensor, nn
from tinygrad.uop.ops import Ops, AxisType
from tinygrad.renderer.ptx import PTXRenderer
from tinygrad.codegen.opt.postrange import Scheduler
from tinygrad.codegen.opt import heuristic
from tinygrad.helpers import Target, prod
import backend
from backend.patches import matvec, tiles
ren = PTXRenderer(Target("CUDA", "PTX", "sm_87"))
def kernels(*ts):
  return [c.src[0] for c in Tensor.schedule_linear(*ts).toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK]
def scheduler(ast):
  k = Scheduler(ast, ren); k.convert_loop_to_global()
  return k
"""

def run(code: str, head: str = "", **env) -> dict:
  base = {k: v for k, v in os.environ.items() if k not in ("TILES", "TILES_MIN", "DEBUG", "BEAM", "JITBEAM")}
  # CONV_WINOGRAD=0: the rule is checked on the patch products it was fitted on
  env = {**base, "DEV": "NULL", "PYTHONPATH": ROOT, "MATVEC_FIX": "0", "CONV_WINOGRAD": "0", **env}
  p = subprocess.run([sys.executable, "-c", head + PRELUDE + textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  return json.loads(p.stdout.strip().splitlines()[-1])


def test_sector_counts_of_a_matmul_match_the_hand_count():
  # C = A @ B, 256^3 fp32, no upcasts: axes (i, j) are outputs, k the sum. With threadIdx.x on j (32 lanes) one step of
  # k reads A[i, k] (one sector, shared by the warp) and B[k, j..j+31] (128 contiguous bytes: 4 sectors): 5 / 32 per
  # thread. On i the lanes read 32 rows of A (32 sectors) and one B[k, j]: 33 / 32. The store (C[i, j..j+31], 4 sectors,
  # or 32) counts once per 256-long sum.
  out = run('''
    (ast,) = kernels(Tensor.empty(256, 256) @ Tensor.empty(256, 256))
    k = scheduler(ast)
    print(json.dumps({"shape": [int(s) for s in k.full_shape], "cost": tiles.sector_cost(k, [[(1, 32)], [(0, 32)], [(1, 16), (0, 2)]]).tolist()}))
  ''')
  assert out["shape"] == [256, 256, 256]
  along_j, along_i, two_rows = out["cost"]
  assert along_j == pytest.approx(5 / 32 + 4 / 32 / 256)
  assert along_i == pytest.approx(33 / 32 + 32 / 32 / 256)
  # 16 lanes on j, 2 rows: A 2 sectors, B 2 sectors (64 bytes), C 2 x 2 sectors
  assert two_rows == pytest.approx(4 / 32 + 4 / 32 / 256)


# the shared convolution (common/conv.py) as a GPU program gets it: common first, which installs the heuristic fixes and
# the reduce split (DEV=NULL: a device with locals, like the Orin's)
HEAD = "import common\n"
CONV = '''
  from common.conv import conv
  x, w = Tensor.empty(64, 32, 14, 14), Tensor.empty(64, 32, 3, 3)
  x.requires_grad, w.requires_grad = True, True
  loss = conv(x, w, padding=1).square().sum()
  loss.backward()
  out = []
  for ast in kernels(w.grad, x.grad):
    k = scheduler(ast)
    stock = (matvec._state["orig"] or heuristic.hand_coded_optimizations)(k)     # tinygrad's own heuristic
    tiled = tiles.tile_opts(k, stock)
    if tiled is None: continue
    # the modelled cost of both layouts, each measured on the kernel without its locals
    def cost(s):
      base = k.copy()
      ops = [o for o in s.applied_opts if o.op.name != "LOCAL"]
      for o in ops: base.apply_opt(o)
      probe, layout = base.copy(), []
      for o in [o for o in s.applied_opts if o.op.name == "LOCAL"]:
        rid = probe.rngs[o.axis].arg[:-1]
        layout.append((next(i for i, r in enumerate(base.rngs) if r.arg[:-1] == rid), o.arg)); probe.apply_opt(o)
      return float(tiles.sector_cost(base, [layout])[0])
    from tinygrad.codegen import to_program
    prg = to_program(tiled.get_optimized_ast(), ren)                  # the layout renders to PTX for sm_87
    out.append({"shape": [int(s) for s in k.full_shape], "stock": cost(stock), "tiled": cost(tiled), "ptx": "ld.global" in prg.src[2].arg,
                "patched": [repr(o) for o in matvec.applied_opts(ast, ren)], "opts": [repr(o) for o in tiled.applied_opts],
                "stock_opts": [repr(o) for o in stock.applied_opts],
                "threads": prod(int(tiled.full_shape[i]) for i in tiled.axes_of(AxisType.LOCAL))})
  print(json.dumps(out))
'''

def test_convolution_kernels_get_a_cheaper_layout_and_the_patch_applies_it():
  found = run(CONV, HEAD, MATVEC_FIX="1")
  assert len(found) >= 2, found        # the forward product and the input gradient of a 64 x 32 x 14 x 14 convolution
  for k in found:
    assert k["tiled"] <= 0.75 * k["stock"], k                         # what the rule promises, by its own model
    assert k["opts"] != k["stock_opts"] and k["threads"] <= 128, k
    assert k["patched"] == k["opts"], k                               # installed, the heuristic returns the rule's layout
    assert k["ptx"], k

def test_tiles_off_gives_tinygrads_layout():
  found = run(CONV, HEAD, MATVEC_FIX="1", TILES="0")
  assert found and all(k["patched"] == k["stock_opts"] for k in found), found

def test_small_kernels_are_left_alone():
  # 2^26 multiply-adds is the default floor: a 128^3 matmul (2^21) keeps tinygrad's choice
  out = run('''
    (ast,) = kernels(Tensor.empty(128, 128) @ Tensor.empty(128, 128))
    k = scheduler(ast)
    stock = heuristic.hand_coded_optimizations(k)
    print(json.dumps({"default": tiles.tile_opts(k, stock) is None,
                      "no_floors": tiles.tile_opts(k, stock, min_macs=1, min_threads=1) is not None}))
  ''')
  assert out == {"default": True, "no_floors": True}      # the floors, not the model, leave it alone


def test_tiled_kernels_compute_the_same_numbers_on_emulated_gpu_threads():
  # TILES_MIN=1: every kernel big enough for locals is laid out by the rule, here on tinygrad's PYTHON device
  out = run('''
    from tinygrad import Device
    from common.conv import conv
    rng = np.random.default_rng(0)
    xn, wn = rng.standard_normal((2, 16, 8, 8)).astype(np.float32), rng.standard_normal((48, 16, 3, 3)).astype(np.float32)
    def forward_backward():
      x, w = Tensor(xn), Tensor(wn)
      x.requires_grad, w.requires_grad = True, True
      y = conv(x, w, padding=1)
      y.square().sum().backward()
      return y, w.grad
    y, gw = (t.numpy() for t in forward_backward())
    pyren = Device[Device.DEFAULT].renderer
    def sched(a):
      k = Scheduler(a, pyren); k.convert_loop_to_global()
      return k
    # the same graph again, only scheduled (scheduling hands the tensors their buffers, unrun): which kernels got tiles
    fired = 0
    for a in kernels(*forward_backward()):
      if (tiled := tiles.tile_opts(sched(a), matvec._state["orig"](sched(a)))) is None: continue
      assert matvec.applied_opts(a, pyren) == tuple(tiled.applied_opts)    # what the patched heuristic hands the device
      fired += 1
    # numpy reference: y = Σ_c,taps x_pad · w ; dL/dw = Σ_b,pixels 2 y · x_pad
    xp = np.pad(xn, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack([xp[:, :, i:i + 8, j:j + 8] for i in range(3) for j in range(3)], 2)        # (B, C, 9, H, W)
    ref = np.einsum("bckhw,ock->bohw", patches, wn.reshape(48, 16, 9))
    gref = np.einsum("bohw,bckhw->ock", 2 * ref, patches).reshape(wn.shape)
    print(json.dumps({"fired": fired, "y": float(np.abs(y - ref).max() / np.abs(ref).max()),
                      "gw": float(np.abs(gw - gref).max() / np.abs(gref).max())}))
  ''', HEAD, DEV="PYTHON", MATVEC_FIX="1", TILES_MIN="1")
  assert out["fired"] >= 1, out
  assert out["y"] < 1e-5 and out["gw"] < 1e-5, out
