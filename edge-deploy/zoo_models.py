"""The five classifiers of model_zoo.py, written in tinygrad with torchvision's state-dict keys and shapes.

Not a script: model_zoo.py imports it from beside itself. Each model is one forward function over a `Params`
(parameters by torchvision key, e.g. "layer1.0.conv1.weight"). The forward is the only definition of the layout:
run once on an empty Params, it creates every parameter it asks for, at the shape it asks for (random values),
so the keys of a random model, of a loaded .pth and of the shape check are all the same ones by construction.

The pieces, in the order a reader meets them (x is (B, C, H, W) throughout):
  BatchNorm, eval mode   y = (x − μ_c)·γ_c/√(σ²_c + ε) + β_c      a per-channel affine map, fused by tinygrad into the
                                                                   kernel of the conv before it; ε = 1e-5 in all five
  conv + BN + act        every conv goes through common.conv (groups = C for a depthwise conv; backward=False: inference), bias-free before BN
  ResNet basic block     y = relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x))            (ResNet-18: 2,2,2,2)
  ResNet bottleneck      1x1 → 3x3 (the stride is here, "ResNet v1.5") → 1x1 to 4·width, + shortcut  (ResNet-50: 3,4,6,3)
  shortcut               x, or BN(conv1x1 stride s) ("downsample.0/.1") when the stride or the width changes
  inverted residual      1x1 expand ×t → 3x3 depthwise → 1x1 project (linear, no activation), + x when shapes allow
                         (MobileNetV2: ReLU6 = min(max(x, 0), 6); EfficientNet: SiLU = x·σ(x) and 3x3 or 5x5)
  squeeze-excitation     s = σ(W₂ SiLU(W₁ mean_hw(x) + b₁) + b₂),  y = x · s     (W as 1x1 convs; EfficientNet only)
  VGG-16                 13 conv3x3+bias+ReLU in 5 stages with 2x2 max pools, adaptive average pool to 7x7,
                         then 25088 → 4096 → 4096 → 1000 (dropout is the identity at inference)
Stochastic depth (EfficientNet) and dropout only act in training, so they have no code here.
"""
from __future__ import annotations
import math

import numpy as np
from tinygrad import Tensor, dtypes
from common.conv import conv

BN_EPS = 1e-5
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")   # buffers, not parameters


class Params:
  """torchvision key -> Tensor. Without a state it is being built: get() asks `init` for each parameter it is asked for."""
  def __init__(self, state: dict[str, Tensor] | None = None, init=None):
    self.building, self.init = state is None, init
    self.state: dict[str, Tensor] = {} if state is None else state
    self.largest_activation = 0        # elements per image of the largest conv output (the memory planner's input)

  def get(self, key: str, shape: tuple[int, ...], kind: str = "weight") -> Tensor:
    if self.building: self.state[key] = self.init(shape, kind)
    return self.state[key]

  def note(self, y: Tensor) -> None:
    if self.building: self.largest_activation = max(self.largest_activation, math.prod(y.shape[1:]))


def random_init(seed: int):
  """Values of a plausible trained model's scale, so activations neither vanish nor overflow fp16 over 50 layers:
  He-normal weights (std √(2/fan_in)), small biases, BN with γ, σ² in [0.5, 1.5] and μ, β in ±0.1 (numpy, seeded)."""
  rng = np.random.default_rng(seed)
  def init(shape: tuple[int, ...], kind: str) -> Tensor:
    if kind == "count": return Tensor(np.array(0, np.int64))
    if kind == "weight": a = rng.standard_normal(shape, np.float32) * np.float32(math.sqrt(2 / math.prod(shape[1:])))
    elif kind in ("gamma", "var"): a = rng.random(shape, np.float32) + np.float32(0.5)
    else: a = (rng.random(shape, np.float32) - np.float32(0.5)) * np.float32(0.2)      # "bias", "beta", "mean"
    return Tensor(a)
  return init


def shape_only(shape: tuple[int, ...], kind: str) -> Tensor:
  return Tensor.empty(*shape, dtype=dtypes.int64 if kind == "count" else dtypes.float32)


# ---- the layers -------------------------------------------------------------------------------

def batchnorm(p: Params, x: Tensor, key: str) -> Tensor:
  c = x.shape[1]
  gamma, beta = p.get(f"{key}.weight", (c,), "gamma"), p.get(f"{key}.bias", (c,), "beta")
  mean, var = p.get(f"{key}.running_mean", (c,), "mean"), p.get(f"{key}.running_var", (c,), "var")
  if p.building: p.get(f"{key}.num_batches_tracked", (), "count")     # in the layout; optional in a file
  scale = gamma * (var + BN_EPS).rsqrt()                                 # γ/√(σ² + ε), per channel
  return x * scale.reshape(1, c, 1, 1) + (beta - mean * scale).reshape(1, c, 1, 1)


def conv_bn(p: Params, x: Tensor, conv_key: str, bn_key: str, out: int, k: int, stride: int = 1, groups: int = 1, act=None) -> Tensor:
  """conv k×k (padding (k−1)/2, no bias) → BatchNorm → act. groups = C: depthwise."""
  w = p.get(f"{conv_key}.weight", (out, x.shape[1] // groups, k, k))
  y = batchnorm(p, conv(x, w, None, stride, (k - 1) // 2, groups, backward=False), bn_key)
  p.note(y)
  return act(y) if act is not None else y


def linear(p: Params, x: Tensor, key: str, out: int) -> Tensor:
  w, b = p.get(f"{key}.weight", (out, x.shape[1])), p.get(f"{key}.bias", (out,), "bias")
  return x @ w.T + b


def global_avg_pool(x: Tensor) -> Tensor:
  """(B, C, H, W) -> (B, C), the mean over the map. The map is stored first: left lazy, tinygrad fuses the last conv (a
  sum of its own) into the pool's sum, and one thread per image and channel then recomputes that conv at every pixel
  (README.md, model zoo: with this store and the downsample's both left out, ResNet-18's fp16 batch-1 forward took
  32.2 ms on the H200 against 2.15)."""
  return x.contiguous().mean((2, 3))


def relu(x: Tensor) -> Tensor: return x.relu()
def relu6(x: Tensor) -> Tensor: return x.relu().minimum(6)
def silu(x: Tensor) -> Tensor: return x * x.sigmoid()


# ---- ResNet-18 / ResNet-50 ----------------------------------------------------------------------

def resnet_block(p: Params, x: Tensor, key: str, width: int, stride: int, bottleneck: bool) -> Tensor:
  if bottleneck:
    h = conv_bn(p, x, f"{key}.conv1", f"{key}.bn1", width, 1, act=relu)
    h = conv_bn(p, h, f"{key}.conv2", f"{key}.bn2", width, 3, stride, act=relu)
    h, out = conv_bn(p, h, f"{key}.conv3", f"{key}.bn3", 4 * width, 1), 4 * width
  else:
    h = conv_bn(p, x, f"{key}.conv1", f"{key}.bn1", width, 3, stride, act=relu)
    h, out = conv_bn(p, h, f"{key}.conv2", f"{key}.bn2", width, 3), width
  # the downsample conv is stored (.contiguous()): left lazy, tinygrad computes it inside the kernel of the block's
  # last conv, and a kernel with two sums gets no tensor cores
  shortcut = x if stride == 1 and x.shape[1] == out else conv_bn(p, x, f"{key}.downsample.0", f"{key}.downsample.1", out, 1, stride).contiguous()
  return (h + shortcut).relu()


def resnet(p: Params, x: Tensor, blocks: tuple[int, ...], bottleneck: bool) -> Tensor:
  x = conv_bn(p, x, "conv1", "bn1", 64, 7, stride=2, act=relu)          # (B, 64, H/2, W/2)
  x = x.max_pool2d(3, 2, padding=1)                                      # (B, 64, H/4, W/4)
  for stage, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
    for j in range(n): x = resnet_block(p, x, f"layer{stage}.{j}", width, 2 if j == 0 and stage > 1 else 1, bottleneck)
  return linear(p, global_avg_pool(x), "fc", 1000)                       # (B, 512 or 2048) -> logits


def resnet18(p: Params, x: Tensor) -> Tensor: return resnet(p, x, (2, 2, 2, 2), bottleneck=False)
def resnet50(p: Params, x: Tensor) -> Tensor: return resnet(p, x, (3, 4, 6, 3), bottleneck=True)


# ---- MobileNetV2 --------------------------------------------------------------------------------

# (expansion t, out channels c, blocks n, first stride s), torchvision's inverted_residual_setting at width 1.0
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def inverted_residual(p: Params, x: Tensor, key: str, out: int, stride: int, t: int) -> Tensor:
  """features.i.conv: [0: 1x1 expand (t > 1)], 3x3 depthwise, then the projection as a bare conv + BN (two indices)."""
  cin, h, i = x.shape[1], x, 0
  if t != 1: h, i = conv_bn(p, h, f"{key}.0.0", f"{key}.0.1", cin * t, 1, act=relu6), 1
  h = conv_bn(p, h, f"{key}.{i}.0", f"{key}.{i}.1", h.shape[1], 3, stride, groups=h.shape[1], act=relu6)
  h = conv_bn(p, h, f"{key}.{i + 1}", f"{key}.{i + 2}", out, 1)
  return x + h if stride == 1 and cin == out else h


def mobilenet_v2(p: Params, x: Tensor) -> Tensor:
  x = conv_bn(p, x, "features.0.0", "features.0.1", 32, 3, 2, act=relu6)
  i = 1
  for t, c, n, s in MOBILENET_V2:
    for j in range(n):
      x = inverted_residual(p, x, f"features.{i}.conv", c, s if j == 0 else 1, t)
      i += 1
  x = conv_bn(p, x, f"features.{i}.0", f"features.{i}.1", 1280, 1, act=relu6)     # features.18
  return linear(p, global_avg_pool(x), "classifier.1", 1000)                       # classifier.0 is dropout


# ---- EfficientNet-B0 ----------------------------------------------------------------------------

# (expansion t, kernel k, first stride s, out channels, blocks n) per stage features.1..7, torchvision's B0 setting
EFFICIENTNET_B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def squeeze_excite(p: Params, x: Tensor, key: str, squeeze: int) -> Tensor:
  c = x.shape[1]
  s = x.mean((2, 3), keepdim=True)                                       # (B, C, 1, 1)
  s = silu(conv(s, p.get(f"{key}.fc1.weight", (squeeze, c, 1, 1)), p.get(f"{key}.fc1.bias", (squeeze,), "bias"), backward=False))
  s = conv(s, p.get(f"{key}.fc2.weight", (c, squeeze, 1, 1)), p.get(f"{key}.fc2.bias", (c,), "bias"), backward=False).sigmoid()
  return x * s


def mbconv(p: Params, x: Tensor, key: str, out: int, k: int, stride: int, t: int) -> Tensor:
  """features.s.j.block: [0: 1x1 expand (t > 1)], k×k depthwise, squeeze-excitation (squeeze = C_in/4), 1x1 project."""
  cin, h, i = x.shape[1], x, 0
  if t != 1: h, i = conv_bn(p, h, f"{key}.0.0", f"{key}.0.1", cin * t, 1, act=silu), 1   # C_in·6 is already a multiple of 8
  h = conv_bn(p, h, f"{key}.{i}.0", f"{key}.{i}.1", h.shape[1], k, stride, groups=h.shape[1], act=silu)
  h = squeeze_excite(p, h, f"{key}.{i + 1}", max(1, cin // 4))
  h = conv_bn(p, h, f"{key}.{i + 2}.0", f"{key}.{i + 2}.1", out, 1)
  return x + h if stride == 1 and cin == out else h


def efficientnet_b0(p: Params, x: Tensor) -> Tensor:
  x = conv_bn(p, x, "features.0.0", "features.0.1", 32, 3, 2, act=silu)
  for stage, (t, k, s, out, n) in enumerate(EFFICIENTNET_B0, start=1):
    for j in range(n): x = mbconv(p, x, f"features.{stage}.{j}.block", out, k, s if j == 0 else 1, t)
  x = conv_bn(p, x, "features.8.0", "features.8.1", 1280, 1, act=silu)
  return linear(p, global_avg_pool(x), "classifier.1", 1000)


# ---- VGG-16 ---------------------------------------------------------------------------------------

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def adaptive_avg_pool(x: Tensor, out: int) -> Tensor:
  """PyTorch's AdaptiveAvgPool2d: output cell i averages input rows ⌊i·H/out⌋ .. ⌈(i+1)·H/out⌉ − 1 (same for columns),
  written as P_h · x · P_wᵀ with averaging matrices. At 224 px the map is already 7x7 and this is the identity."""
  h, w = x.shape[2:]
  if (h, w) == (out, out): return x
  def pool_matrix(n: int) -> Tensor:
    m = np.zeros((out, n), np.float32)
    for i in range(out):
      lo, hi = (i * n) // out, -((-(i + 1) * n) // out)
      m[i, lo:hi] = 1 / (hi - lo)
    return Tensor(m).cast(x.dtype)
  return pool_matrix(h) @ x @ pool_matrix(w).T


def vgg16(p: Params, x: Tensor) -> Tensor:
  i = 0                                                                  # index in torchvision's `features` Sequential
  for v in VGG16:
    if v == "M": x, i = x.max_pool2d(2, 2), i + 1
    else:
      w, b = p.get(f"features.{i}.weight", (v, x.shape[1], 3, 3)), p.get(f"features.{i}.bias", (v,), "bias")
      x, i = conv(x, w, b, padding=1, backward=False).relu(), i + 2
      p.note(x)
  x = adaptive_avg_pool(x, 7).flatten(1)                                 # (B, 512·7·7)
  x = linear(p, x, "classifier.0", 4096).relu()
  x = linear(p, x, "classifier.3", 4096).relu()
  return linear(p, x, "classifier.6", 1000)


# --- plumbing: the registry, building a model, its layout and parameter count ------------------------------

MODELS = {"resnet18": resnet18, "resnet50": resnet50, "mobilenet_v2": mobilenet_v2, "efficientnet_b0": efficientnet_b0, "vgg16": vgg16}
# torchvision's published parameter counts (weights' meta "num_params"): the layout check
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548,
                      "vgg16": 138_357_544}


def build(name: str, seed: int | None = 0) -> Params:
  """A model whose parameters are created by one lazy forward pass on a 32x32 image: random (numpy, `seed`), or
  seed=None for shapes only (unallocated; nothing is computed until realized)."""
  p = Params(init=shape_only if seed is None else random_init(seed))
  MODELS[name](p, Tensor.empty(1, 3, 32, 32))
  return p


def largest_activation(name: str, size: int) -> int:
  """Elements per image of the largest conv output at a size x size input (shapes only: nothing is computed)."""
  p = Params(init=shape_only)
  MODELS[name](p, Tensor.empty(1, 3, size, size))
  return p.largest_activation


def layout(name: str) -> dict[str, tuple[int, ...]]:
  """torchvision's state-dict keys and shapes for `name`, in the model's order."""
  return {k: tuple(v.shape) for k, v in build(name, seed=None).state.items()}


def n_params(state: dict) -> int:   # values: tensors or shapes
  """Parameters as torchvision counts them: weights and biases, not BatchNorm's running statistics."""
  return sum(math.prod(v if isinstance(v, tuple) else v.shape) for k, v in state.items() if not k.endswith(BN_STATS))


def forward(name: str, state: dict[str, Tensor], x: Tensor) -> Tensor:
  """Logits (B, 1000) of model `name` with the weights in `state` (torchvision keys) for images x (B, 3, H, W)."""
  return MODELS[name](Params(state), x)
