"""backend/patches/split.py: long sums with several output axes (weight gradients) split into two kernels from 4,096
terms per output on GPUs, as tinygrad does only from 32,768. Kernels are scheduled for the NULL device (nothing runs);
the numbers are checked on the CPU with the CPU exclusion lifted."""
import os, subprocess, sys, textwrap
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])

SCRIPT = textwrap.dedent("""
  import json, sys
  import common                                   # installs the patch (REDUCE_SPLIT=0 in the environment: not)
  from tinygrad import Tensor
  from tinygrad.uop.ops import Ops
  def kernels(t): return sum(1 for c in t.schedule_linear().toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK)
  def weight_grad(b, hw, o=16, c=8):              # dL/dw[o, c] = sum over b and pixels of dy[b, o, p] * x[b, c, p]
    return (Tensor.empty(b, o, 1, hw) * Tensor.empty(b, 1, c, hw)).sum((0, 3))
  out = {"setup": common.SETUP.reduce_split,
         "grad_14x14_b32": kernels(weight_grad(32, 196)),      # 6,272 terms per output: below tinygrad's 32,768
         "grad_28x28_b64": kernels(weight_grad(64, 784)),      # 50,176 terms: tinygrad splits it itself
         "grad_7x7_b16": kernels(weight_grad(16, 49)),         # 784 terms: too short to split
         "matvec_2048x8192": kernels((Tensor.empty(2048, 8192) * Tensor.empty(1, 8192)).sum(1)),   # one output axis
         "bias_grad": kernels(Tensor.empty(32, 16, 196).sum((0, 2))),
         "max_8x64x4096": kernels(Tensor.empty(8, 64, 4096).max(-1))}                 # a max is not a sum: left alone
  print(json.dumps(out))
""")


def schedule(**env) -> dict:
  import json
  p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                     env={**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, **env})
  assert p.returncode == 0, p.stderr[-2000:]
  return json.loads(p.stdout.strip().splitlines()[-1])


def test_weight_gradients_below_tinygrads_threshold_become_two_kernels():
  on, off = schedule(), schedule(REDUCE_SPLIT="0")
  assert on["setup"].startswith("on") and off["setup"] == "off"
  assert off["grad_14x14_b32"] == 1 and on["grad_14x14_b32"] == 2
  assert schedule(REDUCE_SPLIT_MIN="8192")["grad_14x14_b32"] == 1            # the threshold is the knob


def test_split_leaves_matvecs_per_channel_sums_short_sums_and_tinygrads_own_splits_alone():
  on, off = schedule(), schedule(REDUCE_SPLIT="0")
  for case in ("grad_28x28_b64", "grad_7x7_b16", "matvec_2048x8192", "bias_grad", "max_8x64x4096"):
    assert on[case] == off[case], case
  assert on["grad_28x28_b64"] == 2 and on["matvec_2048x8192"] == 1


def test_split_gradient_has_the_same_numbers_and_cpu_kernels_keep_tinygrads_rule():
  code = textwrap.dedent("""
    import sys
    import numpy as np
    import common
    from backend.patches import split
    from tinygrad import Tensor
    from tinygrad.uop.ops import Ops
    if sys.argv[1] == "lift": split.STOCK_DEVICES = ()     # let the patch act on the CPU, to run the split kernels
    rng = np.random.default_rng(0)
    dy, x = rng.standard_normal((32, 16, 196)).astype(np.float32), rng.standard_normal((32, 8, 196)).astype(np.float32)
    def grad(): return (Tensor(dy).reshape(32, 16, 1, 196) * Tensor(x).reshape(32, 1, 8, 196)).sum((0, 3))
    sums = sum(1 for c in grad().schedule_linear().toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK and
               any(u.op is Ops.REDUCE for u in c.src[0].toposort()))
    print(sums, float(np.abs(grad().numpy() - np.einsum("bop,bcp->oc", dy, x)).max()))
  """)
  runs = {}
  for mode in ("cpu", "lift"):
    p = subprocess.run([sys.executable, "-c", code, mode], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DEV": "CPU", "PYTHONPATH": ROOT})
    assert p.returncode == 0, p.stderr[-2000:]
    sums, err = p.stdout.split()
    runs[mode] = (int(sums), float(err))
  assert runs["cpu"][0] == 1 and runs["lift"][0] == 2, runs
  assert runs["cpu"][1] < 1e-3 and runs["lift"][1] < 1e-3, runs


def run_code(code: str, **env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                        env={**os.environ, "DEV": "NULL", "PYTHONPATH": ROOT, **env})


def test_an_install_after_the_first_schedule_is_refused_not_reported_on():
  p = run_code("""
    import common
    from tinygrad import Tensor
    from backend.patches import split
    Tensor.empty(64, 4096).sum(1).schedule_linear()     # the scheduler compiles its split rule here
    try: split.install()
    except RuntimeError as e: print("refused:", e)
    print(split.is_installed())
  """, REDUCE_SPLIT="0")
  assert p.returncode == 0, p.stderr[-2000:]
  assert "refused: the reduce split must be installed before" in p.stdout and p.stdout.split()[-1] == "False", p.stdout


def test_the_jetson_start_up_hook_installs_it_before_the_first_schedule_without_common():
  p = run_code("""
    import backend._startup as hook
    hook.run()                                           # what the .pth line runs on a Jetson
    from tinygrad import Tensor
    from tinygrad.uop.ops import Ops
    g = (Tensor.empty(32, 16, 1, 196) * Tensor.empty(32, 1, 8, 196)).sum((0, 3))
    print(sum(1 for c in g.schedule_linear().toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK))
  """)
  assert p.returncode == 0, p.stderr[-2000:]
  assert p.stdout.split()[-1] == "2", p.stdout + p.stderr


def test_a_bad_threshold_is_a_one_line_error():
  p = run_code("import common", REDUCE_SPLIT_MIN="4k")
  assert p.returncode == 2 and p.stderr.strip().splitlines() == ["error: REDUCE_SPLIT_MIN='4k': give a whole number of terms, e.g. 4096"], p.stderr
