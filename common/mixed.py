"""Mixed precision training: fp16 arithmetic where the time goes (the convolutions), fp32 wherever a value
accumulates (the weights, the optimizer's moments, norms, the loss).

  forward    y = conv(x.half(), W.half()).float()     the products in fp16 (tensor cores on the Orin),
                                                     their sums in fp32 (tinygrad accumulates half in float)
  backward   ∂L/∂W = float(∂L/∂W_half)                autograd through the casts: the master weights stay fp32,
                                                     and so does the optimizer that updates them
  scaling    (S·L).backward(), then g ← g / S         fp16 keeps magnitudes from 6e-8 to 65504: small
                                                     gradients would flush to zero, so the loss is scaled
                                                     up by S before the backward pass and the gradients
                                                     scaled down after it, in fp32
  overflow   an inf or nan in any gradient means S was too large: that step is skipped (the optimizer
             runs it with a learning rate of 0 and zeroed gradients) and S ← S/2; after `growth_interval` clean steps,
             S ← 2S. All of it is tensor arithmetic on realized state, so it runs inside a TinyJit.

    half_precision(model)                    # every common.conv.Conv2d of the model computes in fp16
    scaler = LossScaler(opt)
    @TinyJit
    def step(x):
      opt.zero_grad()
      scaler.backward(loss_of(model(x)))     # (S·L).backward()
      scaler.step()                          # g ← g / S, or a skipped step; then opt's update

A skipped step is not quite PyTorch's GradScaler skip: Adam's moments still decay once (with zero gradients)
and its step counter advances; the weights do not move (to a rounding in the last bit).
"""
from __future__ import annotations
from typing import Any

from tinygrad import Tensor, dtypes


def half_precision(model: Any, dtype=dtypes.half) -> int:
  """Make every common.conv.Conv2d reachable from `model`'s attributes (lists and dicts too) compute in `dtype`;
  returns how many. The weights themselves stay fp32: they are cast at each use."""
  from common.conv import Conv2d
  seen, found, todo = set(), 0, [model]
  while todo:
    obj = todo.pop()
    if id(obj) in seen or isinstance(obj, (Tensor, str, int, float, bool, type(None))): continue
    seen.add(id(obj))
    if isinstance(obj, Conv2d):
      obj.compute_dtype, found = dtype, found + 1
    if isinstance(obj, (list, tuple)): todo.extend(obj)
    elif isinstance(obj, dict): todo.extend(obj.values())
    elif hasattr(obj, "__dict__"): todo.extend(vars(obj).values())
  return found


class LossScaler:
  """Dynamic loss scaling for one optimizer (see the module docstring). `enabled=False` makes it a plain
  backward, so a training step can be written once for fp32 and fp16."""
  def __init__(self, opt, scale: float = 2.0 ** 12, growth_interval: int = 200, enabled: bool = True):
    self.opt, self.enabled, self.growth_interval = opt, enabled, growth_interval
    self.scale = Tensor([scale if enabled else 1.0]).realize()
    self.clean_steps = Tensor([0.0]).realize()

  def backward(self, loss: Tensor) -> None:
    (loss * self.scale.reshape(()) if self.enabled else loss).backward()

  def schedule_step(self) -> list[Tensor]:
    """unscale_and_check, then the optimizer's schedule_step: the tensors to realize, the scaler's state with
    them (inside a TinyJit every update must be realized in the step, not left lazy after it). A skipped step
    runs the optimizer with a learning rate of 0; the optimizer's own lr (which a schedule may set) is untouched."""
    finite = self.unscale_and_check()
    if finite is None: return self.opt.schedule_step()
    lr, self.opt.lr = self.opt.lr, finite.where(self.opt.lr, 0)     # an expression for this step only
    try: updates = self.opt.schedule_step()
    finally: self.opt.lr = lr
    return updates + [self.scale, self.clean_steps]

  def step(self, *also: Tensor) -> None:
    """schedule_step, realized together with `also` (e.g. the loss)."""
    Tensor.realize(*self.schedule_step(), *also)

  def unscale_and_check(self) -> Tensor | None:
    """g ← g / S for every parameter with a gradient; on an inf or nan the step is skipped and S halves.
    Returns the scalar "the gradients were finite" (None when disabled). Lazy: `step` realizes it."""
    if not self.enabled: return None
    params = [p for p in self.opt.params if p.grad is not None]
    # each check its own kernel, then one scalar buffer: left lazy, the stacked checks fuse into every consumer below,
    # and each parameter's update re-reads every gradient in one serial kernel (H200, the AE's fp16 step: 15.7 ms of
    # kernels against 4.8 in fp32, 11 ms of it such re-checks)
    finite = Tensor.stack(*[p.grad.float().isfinite().all().contiguous() for p in params]).all().contiguous()
    for p in params: p.grad = finite.where(p.grad / self.scale.cast(p.grad.dtype), 0)
    clean = finite.where(self.clean_steps + 1, 0)
    grow = clean >= self.growth_interval
    self.scale.assign(finite.where(grow.where(self.scale * 2, self.scale), self.scale / 2))
    self.clean_steps.assign(grow.where(0, clean))
    return finite
