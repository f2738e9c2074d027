"""common.profile on the CPU: every kernel of a JIT'd training step is timed and accounted for; scripts/profile_step.py
refuses flags that do not go together."""
import common  # noqa: F401
import pytest
from conftest import bad_input
from tinygrad import Tensor, TinyJit, nn
from tinygrad.helpers import Context
from tinygrad.nn.state import get_parameters
from common.bench import jit_kernel_count
from common.profile import profile_step, profile_table


def test_profile_accounts_for_every_kernel_of_a_conv_step():
  conv = nn.Conv2d(4, 8, 3, padding=1)
  opt = nn.optim.Adam(get_parameters(conv))
  Tensor.realize(*get_parameters(conv), *get_parameters(opt))
  x = Tensor.randn(2, 4, 8, 8).realize()

  def step(x):
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = conv(x).relu().mean()
      loss.backward()
      opt.step()
      return loss.realize()
  rows, wall = profile_step(step, x)
  reference = TinyJit(step)
  with Context(JIT=2):
    for _ in range(2): reference(x)
  assert sum(k.calls for k in rows) == jit_kernel_count(reference)          # every launch of the step is in the profile
  assert all(k.seconds > 0 for k in rows) and sum(k.seconds for k in rows) <= wall
  assert [k.seconds for k in rows] == sorted((k.seconds for k in rows), reverse=True)
  conv_kernels = [k for k in rows if k.ops > 0]
  assert conv_kernels and all(k.gflops > 0 for k in conv_kernels)
  table = profile_table(rows, wall, top=3)
  assert table.count("\n| r_") + table.count("\n| E_") <= 3 + 1 and "more" in table and "%" in table


@pytest.mark.parametrize("args, fragment", [
  (("--step", "vgg", "--half"), "--half is for the U-Net and autoencoder steps"),
  (("--step", "decode"), "--step decode and --gguf PATH go together"),
  (("--step", "decode", "--gguf", "README.md", "--time", "3"), "--time is for the training steps"),
  (("--step", "unet", "--gguf", "README.md"), "--step decode and --gguf PATH go together"),
])
def test_profile_script_refuses_flags_that_do_not_go_together(args, fragment):
  bad_input("scripts/profile_step.py", *args, fragments=(fragment,))


def test_gemm_probe_times_one_product_and_lists_its_opts():
  from conftest import run_py
  r = run_py("scripts/gemm_bench.py", "32", "16", "64", "--iters", "3")
  assert r.returncode == 0, r.stderr[-2000:]
  head, *opts = r.stdout.strip().splitlines()
  assert head.startswith("32x16x64 fp32 on CPU: median ") and head.endswith(" TFLOP/s")
  assert opts and all(line.startswith("  kernel opts: ") for line in opts)
  bad_input("scripts/gemm_bench.py", "0", "16", "64", fragments=("argument m",))
