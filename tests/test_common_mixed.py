"""common.mixed: fp16 convolutions with fp32 master weights, and dynamic loss scaling inside a TinyJit."""
import numpy as np
import common  # noqa: F401
from tinygrad import Tensor, TinyJit, nn
from tinygrad.helpers import Context
from tinygrad.nn.state import get_parameters
from common.conv import Conv2d
from common.mixed import LossScaler, half_precision


class Tiny:
  def __init__(self):
    self.c1, self.c2 = Conv2d(1, 4, 3, stride=2, padding=1), Conv2d(4, 1, 3, padding=1)
  def __call__(self, x): return self.c2(self.c1(x).relu(), upsample=2)


def make_step(model, half: bool, scale: float, growth_interval: int = 200):
  if half: half_precision(model)
  opt = nn.optim.Adam(get_parameters(model), lr=1e-2)
  scaler = LossScaler(opt, scale=scale, growth_interval=growth_interval, enabled=half)
  @TinyJit
  def step(x):
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = ((model(x) - x) ** 2).mean()
      scaler.backward(loss)
      scaler.step(loss)
      return loss
  return step, scaler


def test_fp16_training_follows_fp32():
  x = Tensor(np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)).realize()
  losses = {}
  for half in (False, True):
    Tensor.manual_seed(1)
    step, _ = make_step(Tiny(), half, 2.0 ** 10)
    losses[half] = [step(x).item() for _ in range(30)]
  assert losses[True][-1] < 0.5 * losses[True][0]                        # it learns
  np.testing.assert_allclose(losses[True], losses[False], rtol=0.05, atol=1e-3)   # and as fp32 does


def test_overflow_skips_the_step_and_halves_the_scale_and_clean_steps_grow_it():
  x = Tensor(np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)).realize()
  Tensor.manual_seed(2)
  model = Tiny()
  step, scaler = make_step(model, True, 2.0 ** 40, growth_interval=2)    # S·g far beyond fp16's 65504: inf
  before = [p.numpy().copy() for p in get_parameters(model)]
  step(x)
  # the weights did not move (to a rounding: tinygrad's Adam update with lr 0 can change the last bit)
  assert all(np.allclose(b, p.numpy(), rtol=0, atol=1e-6) for b, p in zip(before, get_parameters(model)))
  assert scaler.scale.item() == 2.0 ** 39
  for _ in range(40): step(x)                                            # halving until the gradients fit
  s = scaler.scale.item()
  assert s <= 2.0 ** 30 and all(np.isfinite(p.numpy()).all() for p in get_parameters(model))
  assert not all(np.allclose(b, p.numpy(), rtol=0, atol=1e-4) for b, p in zip(before, get_parameters(model)))   # then it trains


def test_the_overflow_check_reads_each_gradient_once_not_once_per_parameter():
  """Left lazy, the all-finite check fused into every parameter's update, and each update re-read every gradient
  (the H200's fp16 autoencoder step spent 11 of its 15.7 ms of kernels on such re-checks). Bytes moved by one
  scaler step over K parameters, in units of all gradients' bytes: Adam's own traffic plus ~1 read for the check,
  not ~K."""
  from tinygrad import GlobalCounters
  K, n = 16, 64
  layers = [nn.Linear(n, n, bias=False) for _ in range(K)]
  params = [layer.weight for layer in layers]
  Tensor.realize(*params)
  opt = nn.optim.Adam(params, lr=1e-3)
  scaler = LossScaler(opt)
  x = Tensor.ones(4, n).contiguous().realize()
  with Context(TRAINING=1):
    opt.zero_grad()
    scaler.backward(sum(layer(x).square().sum() for layer in layers))
    Tensor.realize(*[p.grad for p in params])
    GlobalCounters.reset()
    scaler.step()
  assert GlobalCounters.global_mem / (K * n * n * 4) < 24              # 19 measured; the lazy check gave 34 (16 + 18)
