"""Neural style transfer (Gatys, Ecker & Bethge 2016): paint a content image in the style of another
by optimizing the pixels themselves with autograd, in pure tinygrad.

THE IDEA
  A convolutional network turns an image x into feature maps F_l(x) of shape (C_l, H_l, W_l), one per
  layer l. Deep feature maps keep *where things are* (content); the correlations between channels,
  averaged over all positions, keep *what the textures look like* and forget where (style):

    Gram matrix   G_l(x) = F_l F_lᵀ / (C_l·H_l·W_l)      F_l reshaped to (C_l, H_l·W_l)  ->  G_l: (C_l, C_l)

  Given a content image c and a style image s, we look for the image x that minimizes

    L(x) = α·L_content + β·L_style + γ·L_tv
    L_content = mean((F_c(x) − F_c(c))²)                      one deep layer c (VGG-19: conv4_2)
    L_style   = Σ_l w_l · mean((G_l(x) − G_l(s))²)            layers conv1_1, conv2_1, …, conv5_1
    L_tv      = mean((x[i+1,j] − x[i,j])²) + mean((x[i,j+1] − x[i,j])²)   (smoothness of the pixels)

  The network is fixed; the only parameter is the image x: (1, 3, H, W), initialized from the content
  image (or the style image, or noise) and improved by gradient steps, ∂L/∂x by autograd, with Adam
  (tinygrad.nn.optim) or L-BFGS (below: the two-loop recursion without line search, as torch.optim.LBFGS
  in the PyTorch tutorial). After each update the pixels are clipped to [0, 1] (a projected step).
  One step = forward + backward + update, all inside one TinyJit, so JITBEAM=N tunes its kernels.
  α:β ≈ 1:1e6 with L-BFGS for 300 steps at 512 px is the PyTorch tutorial's VGG-19 recipe.

TWO FEATURE NETWORKS
  --net vgg19 --weights vgg19.pth   VGG-19 as torchvision's vgg19().features (keys features.{0,2,…,34}),
      average pooling (Gatys) or --pool max. Shapes at input H×W: conv1_1 (64, H, W), conv2_1 (128, H/2,
      W/2), conv3_1 (256, H/4), conv4_1/conv4_2 (512, H/8), conv5_1 (512, H/16). Pretrained ImageNet
      weights give the classic painterly results; nothing is downloaded here, but on a machine online
        python3 -c "import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')"
      leaves ~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth (548 MB; a .safetensors export works too).
      Without --weights the weights are random: right for --bench, not for pictures. Convolutions are
      im2col + a matmul (conv2d_im2col) so the input gradient is fast; --conv direct uses conv2d.
  --net random (the default)   random multi-scale features (Ustyuzhaninov et al. 2016, "Texture synthesis
      using shallow convolutional networks with random filters"): a pyramid x_0 = x, x_k =
      blur_downsample(x_{k−1}), k = 0…4, each level with its own --filters random --kernel² filters,
      f_k = ReLU(W_k ∗ x_k + b_k): (F, H/2^k, W/2^k), matching VGG's five style scales; content at level 3
      (H/8, like conv4_2). Style arrives as palette, strokes and texture, not as learned motifs; content
      is kept as coarse luminance structure rather than as object parts.

SHAPES AND FILES: --size is the result's long edge (16 … 4096 px, aspect kept), the style image's is
  --size × --style-scale. Images: whatever common.files.read_image reads (8/16-bit, float, greyscale,
  palette, CMYK; transparent pixels become white); without --content/--style, a drawn landscape and
  mosaic. Under --out (default out/style-transfer/): result.png, panel.png (content | style | result),
  losses.png, summary.json, snapshots/ (--snapshot-every N). --save PATH writes the result as a
  (1, 3, H, W) .safetensors image that --load PATH continues from; --json PATH writes timing records
  (common.bench schema) of the demo's steps or of every --bench case. Outputs are checked before work.

RUN
  laptop / any CPU:  python3 style-transfer/style_transfer.py                 (demo: 256 px, Adam, 300 steps)
  Jetson Orin:       NV=1 python3 style-transfer/style_transfer.py --size 512
  your images:       NV=1 python3 style-transfer/style_transfer.py --content photo.jpg --style painting.jpg
  real VGG-19:       ... --net vgg19 --weights vgg19-dcbb9e9d.pth --optimizer lbfgs --size 512
  coarse to fine:    ... --scales 3   (run at size/4, size/2, size; each scale starts from the last)
  timing:            NV=1 python3 style-transfer/style_transfer.py --bench --json out/bench.json
  try: JITBEAM=2 (kernel search for the JIT'd step), --half (fp16 network), --init noise, --pool max.

SUCCESS CHECK: the style loss must fall to ≤ 5 % of its value at the initial image, while the content
  loss stays ≤ 80 % of the content loss of the *style picture itself* (resized to the content's shape):
  nearer the content than the style image is, in the content layer's feature space. Loose on purpose:
  the random network's content layer also encodes colour, which stylization changes (the default demo
  lands at 0.55 with every shape visible in panel.png). Exit 1 if either part fails.

EXPECTED RESULTS (measured on this code; commands and machines in style-transfer/README.md)
  2-core CPU: the default demo (256x192, random features, Adam, 300 steps) passes with style 0.0070 of
  its start and content 0.55 of the style picture's, in 115.6 CPU-seconds. VGG-19 belongs on a GPU.
  NVIDIA H200 (DEV=CUDA): the demo at 512 px passes in 10.9 s of steps; a VGG-19 Adam step at 512 px
  takes 41.3 ms in fp32 without BEAM and 14.9 ms with JITBEAM=2 (PyTorch, TF32 off: 18.6 ms).
  Jetson Orin AGX: expected several times slower than the H200; not measured yet.
"""
import common  # first: turns NV=1 / CUDA=1 / CPU=1 into DEV=... before tinygrad reads it
import argparse, gc, math, sys, time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tinygrad import Tensor, TinyJit, GlobalCounters, Device, dtypes
from tinygrad.helpers import Context
from tinygrad.nn.optim import Adam, Optimizer

from common import UserError, files, plots
from common.bench import Bench, Timing
from common.conv import conv
from common.cli import choice_list, existing_file, int_list, int_range, nonnegative_float, positive_float, positive_int

PROJECT = "style-transfer"
SCRIPT = "style-transfer/style_transfer.py"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_EDGE = 16      # both networks pool four times before their deepest layer
MAX_EDGE = 4096    # a VGG-19 step held 952 MB at 512 px on the H200: ~60 GB at 4096 px if it grows with the pixels


@dataclass(frozen=True)
class StyleConfig:
  """What decides the picture. The defaults are the demo's (random features, Adam)."""
  net: str = "random"              # "random" (random multi-scale filters) or "vgg19"
  pool: str = "avg"                # VGG: pooling between blocks, "avg" (Gatys) or "max"
  conv: str = "im2col"             # VGG: "im2col" (a matmul input gradient) or "direct" (tinygrad's conv2d)
  filters: int = 64                # random net: filters per pyramid level
  kernel: int = 5                  # random net: filter size (odd)
  content_weight: float = 1.0      # α
  style_weight: float = 3e4        # β
  tv_weight: float = 1e-2          # γ
  layer_weights: tuple[float, ...] = (1.0,) * 5   # w_l for the five style layers
  optimizer: str = "adam"          # "adam" or "lbfgs"
  lr: float = 0.02
  steps: int = 300                 # optimization steps per scale
  scales: int = 1                  # coarse to fine: resolutions size/2^(scales-1) … size
  init: str = "content"            # starting image: "content", "style" or "noise"
  half: bool = False               # the feature network in fp16 (Gram matrices and losses stay fp32)
  seed: int = 0                    # the noise start


DEFAULT_WEIGHTS = {  # (content α, style β, tv γ) for each network's feature scale
  "vgg19": (1.0, 1e6, 1e-2),       # the PyTorch tutorial's α:β; γ keeps L-BFGS from grainy pixels
  "random": (1.0, 3e4, 1e-2),      # random features are weaker; β measured so Adam and L-BFGS both pass
}
DEFAULT_LR = {"adam": 0.02, "lbfgs": 1.0}
STYLE_TARGET = 0.05   # success: final style loss <= 5 % of the initial image's
CONTENT_BOUND = 0.8   # ... while the content loss stays <= 80 % of the style picture's own content loss

# ---- 1. The math: Gram matrices, the three losses, and the image operators the networks are built of ------

def gram(f: Tensor) -> Tensor:
  """G = F Fᵀ / (C·H·W): (1, C, H, W) -> (C, C), accumulated in fp32 even for fp16 features."""
  _, c, h, w = f.shape
  flat = f.reshape(c, h * w)
  return flat.matmul(flat.T, dtype=dtypes.float32).float() / (c * h * w)


def content_loss(f: Tensor, target: Tensor) -> Tensor:
  return ((f.float() - target) ** 2).mean()


def style_loss(feats: dict[str, Tensor], target_grams: dict[str, Tensor], layer_weights: dict[str, float]) -> Tensor:
  return sum(layer_weights[n] * ((gram(feats[n]) - target_grams[n]) ** 2).mean() for n in target_grams)


def tv_loss(x: Tensor) -> Tensor:
  """Total variation: mean squared difference of neighbouring pixels, down and across."""
  return ((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2).mean() + ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).mean()


def imagenet_normalize(x: Tensor) -> Tensor:
  mean = Tensor(IMAGENET_MEAN, dtype=x.dtype).reshape(1, 3, 1, 1)
  std = Tensor(IMAGENET_STD, dtype=x.dtype).reshape(1, 3, 1, 1)
  return (x - mean) / std


def conv2d_im2col(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
  """VGG's stride-1 "same" convolution as im2col and matrix products (common/conv.py derives why): style
  transfer needs only ∂L/∂x, and for tinygrad's pooling-view conv2d autograd makes that a masked window
  per pixel at a tenth of the forward's speed (H200 profile); here it is a product plus k² shifted adds.
  common.conv picks the form for fixed weights (weight_grad=False): the patches read as views on a GPU,
  stored (gemm) on a CPU. contiguous_backward stores ∂L/∂y once for both. --conv direct uses tinygrad's
  conv2d, to compare."""
  return conv(x, w, b, padding=w.shape[-1] // 2, weight_grad=False).contiguous_backward()


def blur_downsample(x: Tensor) -> Tensor:
  """One step of a Gaussian (Burt-Adelson) pyramid: blur with the binomial kernel [1 4 6 4 1]/16 in
  both directions, keep every second pixel. (1, C, H, W) -> (1, C, ceil(H/2), ceil(W/2)). Plain 2x2
  averaging would also halve the size, but its gradient is constant over 2^k-pixel blocks, which the
  optimized image then shows as a grid; the overlapping blur spreads the gradient smoothly."""
  c = x.shape[1]
  taps = Tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype) / 16
  kernel = (taps.reshape(5, 1) * taps.reshape(1, 5)).reshape(1, 1, 5, 5).expand(c, 1, 5, 5)
  return x.pad((2, 2, 2, 2), mode="replicate").conv2d(kernel, groups=c, stride=2)

# ---- 2. Feature networks: image (1, 3, H, W) in [0, 1] -> {layer: (1, C, h, w)}, with their style and content layers

# torchvision's vgg19 "E" configuration: numbers are 3x3 conv widths (each followed by ReLU), M = pool.
VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg19_layout() -> list[tuple[str, int, int, int]]:
  """[(name, index in features, in_channels, out_channels)] for the 16 convs, indexed exactly as in
  torchvision's nn.Sequential (conv, relu, conv, relu, pool, ...): conv1_1 = features.0, conv4_2 =
  features.21, conv5_1 = features.28."""
  layout, idx, cin, block, pos = [], 0, 3, 1, 1
  for v in VGG19_CFG:
    if v == "M":
      idx, block, pos = idx + 1, block + 1, 1
      continue
    layout.append((f"conv{block}_{pos}", idx, cin, v))
    idx, cin, pos = idx + 2, v, pos + 1
  return layout


class VGG19Features:
  style_layers = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
  content_layer = "conv4_2"

  def __init__(self, pool: str = "avg", state: dict[str, Tensor] | None = None, conv: str = "im2col"):
    self.pool, self.conv = pool, conv
    self.layout = vgg19_layout()
    if state is None:   # random (Kaiming-normal) weights: for timing, or to see why pretrained ones matter
      state = {}
      for _, i, cin, cout in self.layout:
        state[f"features.{i}.weight"] = Tensor.randn(cout, cin, 3, 3) * math.sqrt(2.0 / (cin * 9))
        state[f"features.{i}.bias"] = Tensor.zeros(cout)
    # only conv1_1 … conv5_1 are used: conv5_2 … conv5_4 (28 MB) are checked on load but not kept
    self.layout = self.layout[:[n for n, *_ in self.layout].index(max(self.style_layers + [self.content_layer])) + 1]
    used = {f"features.{i}.{p}" for _, i, _, _ in self.layout for p in ("weight", "bias")}
    self.state = {k: v.cast(dtypes.float32).contiguous().realize() for k, v in state.items() if k in used}

  @staticmethod
  def expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for _, i, cin, cout in vgg19_layout():
      shapes[f"features.{i}.weight"], shapes[f"features.{i}.bias"] = (cout, cin, 3, 3), (cout,)
    return shapes

  def __call__(self, x: Tensor, dtype=dtypes.float32) -> dict[str, Tensor]:
    x, out = imagenet_normalize(x).cast(dtype), {}
    for name, i, _, _ in self.layout:               # conv1_1 … conv5_1
      if name.endswith("_1") and name != "conv1_1":   # a pool sits before each block's first conv
        x = x.avg_pool2d(2) if self.pool == "avg" else x.max_pool2d(2)
      w, b = self.state[f"features.{i}.weight"].cast(dtype), self.state[f"features.{i}.bias"].cast(dtype)
      x = out[name] = (conv2d_im2col(x, w, b) if self.conv == "im2col" else x.conv2d(w, b, padding=1)).relu()
    return out


class RandomFeatures:
  """Random multi-scale features: level k sees the image blurred down 2^k times and applies its own
  `filters` random kernel×kernel filters + ReLU. Same five-scale structure as VGG's style layers."""
  style_layers = ["level0", "level1", "level2", "level3", "level4"]
  content_layer = "level3"

  def __init__(self, filters: int = 64, kernel: int = 5):
    fan_in = 3 * kernel * kernel
    # zero-mean filters see edges and texture; a few with a mean respond to colour and brightness,
    # which the bias (random threshold) turns into "how much of this colour is here" detectors
    self.weights = [(Tensor.randn(filters, 3, kernel, kernel) / math.sqrt(fan_in)).realize() for _ in self.style_layers]
    self.biases = [(Tensor.randn(filters) * 0.5).realize() for _ in self.style_layers]
    self.kernel = kernel

  def __call__(self, x: Tensor, dtype=dtypes.float32) -> dict[str, Tensor]:
    x, out = imagenet_normalize(x).cast(dtype), {}
    for k, (name, w, b) in enumerate(zip(self.style_layers, self.weights, self.biases)):
      if k: x = blur_downsample(x)                 # next level of the image pyramid: (H/2^k, W/2^k)
      out[name] = conv(x, w.cast(dtype), b.cast(dtype), padding=self.kernel // 2).relu()
    return out


def make_net(cfg: StyleConfig, vgg_state: dict[str, Tensor] | None = None):
  """The feature network `cfg` names; `vgg_state` holds pretrained VGG-19 weights (random without)."""
  if cfg.net == "vgg19": return VGG19Features(cfg.pool, vgg_state, cfg.conv)
  return RandomFeatures(cfg.filters, cfg.kernel)

# ---- 3. The optimization: L-BFGS (Adam comes from tinygrad.nn.optim), targets once, a JIT'd step -----------

class LBFGS(Optimizer):
  """Limited-memory BFGS without line search, one function evaluation per step (as torch.optim.LBFGS
  with line_search_fn=None). It keeps the last m pairs s_i = x_{i+1} − x_i, y_i = g_{i+1} − g_i and
  applies the inverse-Hessian estimate H to the gradient by the two-loop recursion:

    q = g;  for i = newest…oldest:  a_i = ρ_i s_iᵀq,  q −= a_i y_i          (ρ_i = 1 / y_iᵀs_i)
    r = γ q (γ = sᵀy / yᵀy of the newest pair);  for i = oldest…newest:  b_i = ρ_i y_iᵀr,  r += s_i (a_i − b_i)
    x ← x − t·r,   t = lr   (first step: t = lr·min(1, 1/‖g‖₁), since there is no curvature yet)

  Everything is a tensor op with a fixed shape (history as (m, N) buffers, empty slots have ρ = 0 and
  drop out), so the whole step, branches included, can live inside one TinyJit. A pair with yᵀs ≤ 1e-10
  (no positive curvature) is not stored, which keeps H positive definite."""
  def __init__(self, params: list[Tensor], lr: float = 1.0, history: int = 10):
    super().__init__(params, lr, fused=True)      # fused: all parameters as one flat vector x of length N
    n = self.pos_params[-1]
    self.m = history
    self.S, self.Y = Tensor.zeros(history, n).contiguous(), Tensor.zeros(history, n).contiguous()
    self.rho = Tensor.zeros(history).contiguous()
    self.x_prev, self.g_prev = Tensor.zeros(n).contiguous(), Tensor.zeros(n).contiguous()
    self.gamma, self.steps = Tensor.ones(1).contiguous(), Tensor.zeros(1).contiguous()
    for t in (self.S, self.Y, self.rho, self.x_prev, self.g_prev, self.gamma, self.steps): t.realize()

  def _step(self, params: list[Tensor], grads: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    x, g = params[0].detach().float(), grads[0].float()
    # remember the pair from the last step, if it has positive curvature
    s, y = x - self.x_prev, g - self.g_prev
    ys = (y * s).sum()
    accept = (self.steps > 0) & (ys > 1e-10)
    S = accept.where(self.S[1:].cat(s.reshape(1, -1)), self.S)
    Y = accept.where(self.Y[1:].cat(y.reshape(1, -1)), self.Y)
    rho = accept.where(self.rho[1:].cat((1.0 / ys.maximum(1e-10)).reshape(1)), self.rho)
    gamma = accept.where(ys / (y * y).sum().maximum(1e-20), self.gamma)
    # two-loop recursion: r = H g
    q, alphas = g, [None] * self.m
    for i in reversed(range(self.m)):
      alphas[i] = rho[i] * (S[i] * q).sum()
      q = q - alphas[i] * Y[i]
    r = gamma * q
    for i in range(self.m):
      beta = rho[i] * (Y[i] * r).sum()
      r = r + S[i] * (alphas[i] - beta)
    t = (self.steps > 0).where(self.lr, self.lr * (1.0 / g.abs().sum()).minimum(1.0))
    for buf, new in ((self.S, S), (self.Y, Y), (self.rho, rho), (self.gamma, gamma), (self.x_prev, x), (self.g_prev, g)):
      buf.assign(new)
    self.steps.assign(self.steps + 1)
    update = (t * r).cast(params[0].dtype)          # the Optimizer base applies x ← x − update
    return [update], [self.S, self.Y, self.rho, self.gamma, self.x_prev, self.g_prev, self.steps]


class StyleProblem:
  """Content/style targets at one resolution, the image being optimized, and its JIT'd step."""
  def __init__(self, net, content: Tensor, style: Tensor, init: Tensor, weights: tuple[float, float, float],
               layer_weights: dict[str, float], optimizer: str, lr: float, dtype=dtypes.float32):
    self.net, self.dtype, self.layer_weights = net, dtype, layer_weights
    self.alpha, self.beta, self.gamma = weights
    self.content_target = net(content, dtype)[net.content_layer].float().realize()
    style_feats = net(style, dtype)
    self.style_grams = {n: gram(style_feats[n]).realize() for n in net.style_layers}
    self.image = init.detach().contiguous().realize()          # (1, 3, H, W): the only parameter
    self.opt = Adam([self.image], lr=lr) if optimizer == "adam" else LBFGS([self.image], lr=lr)
    self.step = TinyJit(self._step)

  def losses(self, x: Tensor) -> Tensor:
    """[total, content, style, tv] for image x, as one (4,) tensor."""
    feats = self.net(x, self.dtype)
    lc = content_loss(feats[self.net.content_layer], self.content_target)
    ls = style_loss(feats, self.style_grams, self.layer_weights)
    ltv = tv_loss(x)
    return Tensor.stack(self.alpha * lc + self.beta * ls + self.gamma * ltv, lc, ls, ltv)

  def _step(self) -> Tensor:
    parts = self.losses(self.image)
    # only the image needs a gradient: ask autograd for exactly that one (weights stay untouched)
    self.image.grad, = parts[0].gradient(self.image)
    # one schedule for the losses and the update, so the forward pass is shared, not recomputed
    with Context(TRAINING=1): Tensor.realize(parts, *self.opt.schedule_step())
    # projected step: keep pixels displayable. Without it the optimizer hides style in values outside
    # [0, 1] that clipping for the PNG then destroys (measured: 10x the style loss after clipping).
    self.image.assign(self.image.clip(0.0, 1.0)).realize()
    return parts

  def evaluate(self, x: Tensor) -> np.ndarray:
    return self.losses(x).numpy()


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
  """(H, W, 3) float in [0, 1] -> (h, w, 3), Lanczos per channel in float (antialiased when shrinking;
  16-bit detail is kept). The same size is returned as it is."""
  if img.shape[:2] == (h, w): return img
  from PIL import Image
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], np.float32)).resize((w, h), Image.LANCZOS)) for c in range(3)]
  return np.clip(np.stack(channels, -1), 0, 1).astype(np.float32)


def to_tensor(img: np.ndarray) -> Tensor:
  """(H, W, 3) numpy -> (1, 3, H, W) Tensor on the default device."""
  return Tensor(np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32)).realize()


def to_numpy(x: Tensor) -> np.ndarray:
  """(1, 3, H, W) Tensor -> (H, W, 3) numpy, clipped to [0, 1] for viewing."""
  return np.clip(x.numpy()[0].transpose(1, 2, 0), 0, 1)


@dataclass
class StyleRun:
  problem: StyleProblem | None = None          # the last (full-resolution) problem
  initial: np.ndarray | None = None            # the starting image, at full size
  result: np.ndarray | None = None
  log: list[dict] = field(default_factory=list)   # one row of losses per step, all scales
  step_seconds: dict[str, list[float]] = field(default_factory=dict)   # "WxH" -> each step's wall time


def stylize(cfg: StyleConfig, net, content: np.ndarray, style: np.ndarray, start: np.ndarray | None = None, on_step=None) -> StyleRun:
  """Coarse-to-fine: cfg.steps at each of cfg.scales resolutions (size/2^(n-1) … size), each starting
  from the previous result upsampled; the first from `start` (a loaded image) or cfg.init.
  on_step(step number, problem) runs after every step (snapshots)."""
  layer_weights = dict(zip(net.style_layers, cfg.layer_weights))
  dtype = dtypes.float16 if cfg.half else dtypes.float32
  H, W = content.shape[:2]
  run, rng = StyleRun(), np.random.default_rng(cfg.seed)
  for k in reversed(range(cfg.scales)):
    h, w = max(MIN_EDGE, round(H / 2 ** k)), max(MIN_EDGE, round(W / 2 ** k))
    c = resize(content, h, w)
    s = resize(style, max(MIN_EDGE, round(style.shape[0] / 2 ** k)), max(MIN_EDGE, round(style.shape[1] / 2 ** k)))
    if run.result is not None or start is not None: x0 = resize(run.result if run.result is not None else start, h, w)
    elif cfg.init == "content": x0 = c
    elif cfg.init == "style": x0 = resize(style, h, w)
    else: x0 = rng.uniform(0.25, 0.75, size=(h, w, 3)).astype(np.float32)
    if run.initial is None: run.initial = resize(x0, H, W)
    run.problem = prob = StyleProblem(net, to_tensor(c), to_tensor(s), to_tensor(x0), (cfg.content_weight, cfg.style_weight, cfg.tv_weight),
                                      layer_weights, cfg.optimizer, cfg.lr, dtype)
    seconds = run.step_seconds.setdefault(f"{w}x{h}", [])
    bar = common.progress(range(cfg.steps), desc=f"{w}x{h}")
    for i in bar:
      GlobalCounters.reset()                      # so DEBUG=2 shows per-step kernel time and memory
      t0 = time.perf_counter()
      total, lc, ls, ltv = prob.step().numpy()    # .numpy() waits for the device: the time is the step's
      seconds.append(time.perf_counter() - t0)
      if not np.isfinite(total): raise UserError(f"the loss became {total} at step {i} of {w}x{h}: lower --lr or the weights")
      run.log.append({"scale": f"{w}x{h}", "step": len(run.log), "total": float(total), "content": float(lc), "style": float(ls), "tv": float(ltv)})
      bar.set_description(f"{w}x{h} style {ls:.3g} content {lc:.3g}")
      if on_step is not None: on_step(len(run.log), prob)
    run.result = to_numpy(prob.image)
  return run

# ---- 4. The success check, at the final resolution, against the initial image and the style picture --------

def success_check(run: StyleRun, content: np.ndarray, style: np.ndarray) -> dict:
  """PASS/FAIL for both parts (see SUCCESS CHECK above): a run that keeps the content image fails the
  style part, one that returns the style picture fails the content part."""
  style_picture = resize(style, *content.shape[:2])
  start, final, of_style = (run.problem.evaluate(to_tensor(x)) for x in (run.initial, run.result, style_picture))
  style_ratio = float(final[2] / max(start[2], 1e-30))
  content_ratio = float(final[1] / max(of_style[1], 1e-30))
  ok_style = common.check("style loss / initial style loss", style_ratio, STYLE_TARGET, higher_is_better=False)
  ok_content = common.check("content loss / content loss of the style image", content_ratio, CONTENT_BOUND, higher_is_better=False)
  names = ("total", "content", "style", "tv")
  return {"style_ratio": style_ratio, "content_ratio": content_ratio, "passed": bool(ok_style and ok_content),
          "start_losses": dict(zip(names, start.tolist())), "final_losses": dict(zip(names, final.tolist())), "style_picture": style_picture}

# --- plumbing: demo pictures, files, --bench, the command line ---------------------------------------

def demo_content(h: int, w: int) -> np.ndarray:
  """A procedurally drawn landscape (sky, sun, two mountain ranges, a lake, a house): clear shapes and
  edges, so one can see the content survive the stylization. (H, W, 3) float32 in [0, 1]."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  u, v = x / w, y / h                                  # 0..1 across and down
  img = np.zeros((h, w, 3), np.float32)
  img[:] = np.stack([0.35 + 0.55 * v, 0.55 + 0.25 * v, 0.95 - 0.35 * v], -1)   # sky, dusk at the horizon
  sun = (u - 0.72) ** 2 + ((v - 0.25) * h / w) ** 2 < 0.09 ** 2
  img[sun] = (1.0, 0.85, 0.3)
  far = 0.45 - 0.10 * np.sin(6.0 * u + 1.0) - 0.05 * np.sin(17.0 * u)
  near = 0.60 - 0.12 * np.sin(3.5 * u + 2.5) - 0.03 * np.sin(29.0 * u)
  img[v > far] = (0.45, 0.45, 0.6)
  img[v > near] = (0.2, 0.45, 0.2)
  lake = (v > 0.75) & (np.abs(u - 0.3) < 0.28)
  img[lake] = np.stack([0.2 + 0.1 * np.sin(60 * v[lake]), 0.35 + 0.1 * np.sin(60 * v[lake]), 0.7 + 0 * v[lake]], -1)
  house = (np.abs(u - 0.78) < 0.08) & (v > 0.62) & (v < 0.8)
  img[house] = (0.85, 0.8, 0.7)
  roof = (v > 0.52) & (v <= 0.62) & (np.abs(u - 0.78) < 0.10 * (v - 0.52) / 0.10)
  img[roof] = (0.6, 0.15, 0.1)
  window = (np.abs(u - 0.78) < 0.025) & (np.abs(v - 0.69) < 0.03)
  img[window] = (0.15, 0.15, 0.3)
  return img


def demo_style(h: int, w: int) -> np.ndarray:
  """A procedurally drawn mosaic: Voronoi cells in a warm/cool palette, each filled with brush-like
  stripes at its own angle, outlined in dark lead lines. Strong colours and textures at several scales,
  easy to recognize in the result. (H, W, 3) float32 in [0, 1]."""
  rng = np.random.default_rng(1234)                    # fixed: the demo looks the same for every --seed
  palette = np.array([(0.95, 0.75, 0.1), (0.85, 0.2, 0.1), (0.1, 0.3, 0.7), (0.05, 0.55, 0.55),
                      (0.95, 0.9, 0.75), (0.5, 0.1, 0.45)], np.float32)
  n = 90
  centres = rng.random((n, 2)).astype(np.float32) * (h, w)
  colour, angle = palette[rng.integers(0, len(palette), n)], rng.random(n) * np.pi
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  best, second, nearest = np.full((h, w), np.inf, np.float32), np.full((h, w), np.inf, np.float32), np.zeros((h, w), np.int64)
  for i, (cy, cx) in enumerate(centres):            # one centre at a time: memory stays a few (H, W) arrays
    d = (y - cy) ** 2 + (x - cx) ** 2
    closer = d < best
    second, nearest, best = np.where(closer, best, np.minimum(second, d)), np.where(closer, i, nearest), np.where(closer, d, best)
  d1, d2 = np.sqrt(best), np.sqrt(second)
  scale = max(h, w) / 256.0                           # stripes and lead lines scale with the picture
  a = angle[nearest]
  stripes = 0.75 + 0.25 * np.sin((x * np.cos(a) + y * np.sin(a)) / (2.2 * scale))
  img = colour[nearest] * stripes[..., None]
  img[(d2 - d1) < 2.5 * scale] = (0.08, 0.06, 0.05)  # lead lines where two cells meet
  return np.clip(img, 0, 1)


def fit_long_edge(h: int, w: int, long_edge: int, what: str) -> tuple[int, int]:
  """Size with the long edge = `long_edge`, aspect ratio kept; one-line error if it gets too thin."""
  s = long_edge / max(h, w)
  nh, nw = max(1, round(h * s)), max(1, round(w * s))
  if min(nh, nw) < MIN_EDGE:
    raise UserError(f"{what} would be {nw}x{nh} px at long edge {long_edge}: the short edge must be >= {MIN_EDGE} px "
                    f"(use a larger --size or a less elongated image)")
  return nh, nw


def load_image(path: str | None, long_edge: int, what: str, demo) -> np.ndarray:
  """A file (common.files.read_image: any mode and bit depth, scaled to [0, 1]) or the demo drawing,
  resized to the long edge. -> (H, W, 3) float32 in [0, 1]."""
  if path is None:
    h, w = fit_long_edge(3, 4, long_edge, what)       # the demo pictures are 4:3
    return demo(h, w)
  arr = files.read_image(path, 3)
  h, w = fit_long_edge(arr.shape[0], arr.shape[1], long_edge, f"{what} {path}")
  return resize(arr, h, w)


def load_vgg19_weights(path: str) -> dict[str, Tensor]:
  """Read a torchvision VGG-19 checkpoint (.pth/.pt via tinygrad's torch loader, or .safetensors) and
  check every features.N key and shape; classifier.* (the full model's head) is ignored. A state dict
  of vgg19().features alone (keys '0.weight', ...) is accepted too."""
  from tinygrad.nn.state import torch_load, safe_load
  p = Path(path)
  if (suffix := p.suffix.lower()) not in (".pth", ".pt", ".safetensors"):
    raise UserError(f"weights {p}: expected a .pth/.pt (PyTorch) or .safetensors file")
  try:
    state = safe_load(str(p)) if suffix == ".safetensors" else torch_load(str(p))
  except Exception as e:
    kind = "safetensors" if suffix == ".safetensors" else "PyTorch checkpoint"
    raise UserError(f"weights {p} cannot be read as a {kind} ({type(e).__name__})")
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict): state = state["state_dict"]
  if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
    raise UserError(f"weights {p} does not hold a state dict of tensors")
  if state and not any(k.startswith("features.") for k in state): state = {f"features.{k}": v for k, v in state.items()}
  state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
  expected = {k: Tensor.empty(*shape) for k, shape in VGG19Features.expected_shapes().items()}   # lazy: shapes only
  files.check_state_matches(expected, state, f"weights {p} (torchvision vgg19 layout)")
  return {k: v.to(Device.DEFAULT).cast(dtypes.float32) for k, v in state.items()}


def load_start_image(path: str, shape: tuple[int, int]) -> np.ndarray:
  """The image a --save run wrote, to continue from: it must have this run's (H, W)."""
  tensors, _ = files.load_checkpoint(path, script=SCRIPT, model="image", expected={"image": (1, 3, *shape)})
  return to_numpy(tensors["image"])


OUTPUT_FILES = ("result.png", "panel.png", "losses.png", "summary.json")


def check_outputs(args) -> Path:
  """Every file the demo will write can be written (before any work); -> the --out folder."""
  common.cli.check_out_dir(args)
  out = Path(args.out)
  for name in OUTPUT_FILES: files.writable_file(out / name, "--out")
  if args.snapshot_every: files.writable_dir(out / "snapshots", "--snapshot-every folder")
  paths = [Path(p).resolve() for p in (args.save, args.json) if p] + [(out / n).resolve() for n in OUTPUT_FILES]
  if len(set(paths)) < len(paths): raise UserError("--save, --json and the files under --out must be different paths")
  return out


def write_outputs(args, cfg: StyleConfig, out: Path, content: np.ndarray, run: StyleRun, verdict: dict, seconds: float) -> None:
  H, W = content.shape[:2]
  files.save_image(run.result, out / "result.png")
  files.save_image(plots.image_grid(np.stack([content, verdict["style_picture"], run.result]), nrow=3, pad=4), out / "panel.png")
  plots.plot_curves(out / "losses.png", {k: [r[k] for r in run.log] for k in ("total", "content", "style", "tv")},
                    title=f"{cfg.net} features, {cfg.optimizer}", xlabel="step (all scales)", ylabel="loss", logy=True)
  if args.save:
    files.save_checkpoint({"image": Tensor(np.ascontiguousarray(run.result.transpose(2, 0, 1)[None]))}, args.save,
                          metadata={"size": args.size, "net": cfg.net, "steps": len(run.log)}, script=SCRIPT, model="image")
    print(f"saved the image to {args.save}")
  if args.json:
    b = Bench(PROJECT)
    for scale, times in run.step_seconds.items():   # the first steps compile and capture the JIT: warm-up
      warm = min(2, len(times) - 1)
      b.add(f"{cfg.net} {scale} {cfg.optimizer} step (demo)", Timing(times[:warm], times[warm:]), rate=(1, "steps/s"))
    b.write_json(args.json)
  summary = {"net": cfg.net, "optimizer": cfg.optimizer, "size": [W, H], "steps": len(run.log), "scales": cfg.scales,
             "device": Device.DEFAULT, "seconds": seconds, **{k: v for k, v in verdict.items() if k != "style_picture"}, "log": run.log}
  files.save_json(summary, out / "summary.json")
  print(f"{len(run.log)} steps in {seconds:.1f} s; wrote {out}/result.png, panel.png, losses.png, summary.json")


def demo(args) -> int:
  out = check_outputs(args)
  cfg = config_from_args(args)
  t0 = time.perf_counter()
  content = load_image(args.content, args.size, "content image", demo_content)
  style = load_image(args.style, round(args.size * args.style_scale), "style image", demo_style)
  start = load_start_image(args.load, content.shape[:2]) if args.load else None
  net = make_net(cfg, load_vgg19_weights(args.weights) if args.weights else None)
  print(f"{cfg.net} features on {Device.DEFAULT}: content {content.shape[1]}x{content.shape[0]}, style "
        f"{style.shape[1]}x{style.shape[0]}, {cfg.optimizer} x {cfg.steps} steps x {cfg.scales} scale(s)")
  snapshot = None
  if args.snapshot_every:
    def snapshot(n, prob):
      if n % args.snapshot_every == 0: files.save_image(to_numpy(prob.image), out / "snapshots" / f"step_{n:05d}.png")
  run = stylize(cfg, net, content, style, start, on_step=snapshot)
  seconds = time.perf_counter() - t0
  verdict = success_check(run, content, style)
  write_outputs(args, cfg, out, content, run, verdict, seconds)
  return 0 if verdict["passed"] else 1

# ---- --bench: forward, Gram, one Adam / L-BFGS step, fp32 and fp16, device memory held ----------------

def bench(args) -> int:
  b = Bench(PROJECT)
  iters, limit = (3, 5.0) if args.quick else (20, 20.0)
  for net_name in args.bench_nets:
    Tensor.manual_seed(args.seed)
    cfg = StyleConfig(net=net_name, pool=args.pool, conv=args.conv, filters=args.filters, kernel=args.kernel)
    net = make_net(cfg, load_vgg19_weights(args.weights) if args.weights and net_name == "vgg19" else None)
    for size in args.bench_sizes:
      content, style = to_tensor(demo_content(size, size)), to_tensor(demo_style(size, size))
      for precision in args.bench_dtypes:
        # tf32: float32 tensors, but matmuls/convs on TF32 tensor cores (10-bit mantissa products, fp32
        # sums), as cuDNN does by default in PyTorch; ALLOW_TF32 is read when the kernels compile
        dtype = dtypes.float16 if precision == "fp16" else dtypes.float32
        with Context(ALLOW_TF32=int(precision == "tf32")):
          bench_cases(b, args.bench_cases, net, net_name, f"{net_name} {size}px {precision}", content, style, dtype, iters, limit)
    del net
  b.print(f"{PROJECT}: style-transfer hot paths")
  print("\ndevice memory held during a step (GlobalCounters.mem_used after JIT capture):")
  for r in (r for r in b.records if "step_mem_MB" in r):
    print(f"  {r['case']}: {r['device_mem_MB']:.1f} MB total, {r['step_mem_MB']:.1f} MB for the step")
  b.write_json(args.json)
  return 0


def bench_cases(b: Bench, cases: list[str], net, net_name: str, tag: str, content: Tensor, style: Tensor, dtype, iters: int, limit: float):
  if "forward" in cases:
    # contiguous: each feature map is computed by its own conv kernel, as in the step. A bare .sum()
    # would let the scheduler fuse each layer's last conv into the reduction (a few threads doing it all)
    fwd = TinyJit(lambda: Tensor.stack(*[f.contiguous().float().sum() for f in net(content, dtype).values()]).realize())
    b.run(f"{tag} forward", fwd, rate=(1, "img/s"), iters=iters, max_seconds=limit)
    del fwd
  if "gram" in cases:
    feats = {n: f.realize() for n, f in net(content, dtype).items()}
    grams = TinyJit(lambda: Tensor.stack(*[gram(feats[n]).sum() for n in net.style_layers]).realize())
    b.run(f"{tag} gram (style layers)", grams, iters=iters, max_seconds=limit)
    del grams, feats
  for opt in [o for o in ("adam", "lbfgs") if o in cases]:
    gc.collect()
    base = GlobalCounters.mem_used
    prob = StyleProblem(net, content, style, content, DEFAULT_WEIGHTS[net_name], {n: 1.0 for n in net.style_layers}, opt, DEFAULT_LR[opt], dtype)
    rec = b.run(f"{tag} {opt} step", prob.step, rate=(1, "steps/s"), iters=iters, max_seconds=limit)
    # after capture the JIT holds every buffer its kernels use (memory-planned once), so this is
    # what one step needs at its peak: weights, image, targets, optimizer state, activations
    rec["device_mem_MB"] = GlobalCounters.mem_used / 1e6
    rec["step_mem_MB"] = (GlobalCounters.mem_used - base) / 1e6
    del prob

# ---- the command line ------------------------------------------------------------------------------

def five_weights(text: str) -> list[float]:
  vals = [nonnegative_float(v) for v in text.split(",")]
  if len(vals) != 5: raise argparse.ArgumentTypeError(f"needs 5 values, got {len(vals)}")
  return vals


DEMO_ONLY = ("content", "style", "size", "style_scale", "net", "optimizer", "lr", "steps", "scales", "init", "content_weight",
             "style_weight", "tv_weight", "layer_weights", "half", "snapshot_every", "save", "load")
BENCH_ONLY = ("bench_sizes", "bench_nets", "bench_cases", "bench_dtypes")


def make_parser() -> common.cli.ArgumentParser:
  p = common.project_parser(PROJECT, __doc__, quick_help="48 px, 40 steps (--bench: 64 px, fp32): seconds, for tests",
                            save_help="the result image as a (1, 3, H, W) tensor (.safetensors)",
                            load_help="an image written by --save: the run starts from it (same --size and content)")
  g = p.add_argument_group("style transfer")
  g.add_argument("--content", type=existing_file, metavar="PATH", help="content image; none: the built-in landscape")
  g.add_argument("--style", type=existing_file, metavar="PATH", help="style image; none: the built-in mosaic")
  g.add_argument("--size", type=int_range(MIN_EDGE, MAX_EDGE), default=256, help="long edge of the result in px")
  g.add_argument("--style-scale", type=positive_float, default=1.0, help="style image long edge = size × this")
  g.add_argument("--net", choices=["random", "vgg19"], default=None, help="feature network; none: vgg19 with --weights, else random")
  g.add_argument("--weights", type=existing_file, metavar="PATH", help="torchvision VGG-19 weights (.pth or .safetensors)")
  g.add_argument("--pool", choices=["avg", "max"], default="avg", help="VGG pooling (Gatys: average)")
  g.add_argument("--conv", choices=["im2col", "direct"], default="im2col",
                 help="how VGG's convolutions are written: im2col + matmul (fast input gradient) or tinygrad's conv2d")
  g.add_argument("--filters", type=int_range(1, 1024), default=64, help="random net: filters per pyramid level")
  g.add_argument("--kernel", type=int_range(1, 15), default=5, help="random net: filter size (odd)")
  g.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam", help="how the pixels are updated")
  g.add_argument("--lr", type=positive_float, default=None, help="step size; none: 0.02 for Adam, 1.0 for L-BFGS")
  g.add_argument("--steps", type=positive_int, default=300, help="optimization steps per scale")
  g.add_argument("--scales", type=positive_int, default=1, help="coarse-to-fine: number of resolutions, each ×2")
  g.add_argument("--init", choices=["content", "style", "noise"], default="content", help="starting image (not with --load)")
  g.add_argument("--content-weight", type=nonnegative_float, default=None, help="α; none: per --net (DEFAULT_WEIGHTS in the script)")
  g.add_argument("--style-weight", type=nonnegative_float, default=None, help="β; none: per --net")
  g.add_argument("--tv-weight", type=nonnegative_float, default=None, help="γ; none: per --net")
  g.add_argument("--layer-weights", type=five_weights, default=[1.0] * 5, help="w_l for the five style layers, comma-separated")
  g.add_argument("--half", action="store_true", help="run the feature network in fp16 (Gram and losses stay fp32)")
  g.add_argument("--snapshot-every", type=positive_int, default=None, metavar="N", help="save the image under --out/snapshots every N steps")
  g.add_argument("--bench-sizes", type=int_list, default=[256, 512], help="--bench: square sizes")
  g.add_argument("--bench-nets", type=choice_list("vgg19", "random"), default=["vgg19", "random"], help="--bench: networks")
  g.add_argument("--bench-cases", type=choice_list("forward", "gram", "adam", "lbfgs"), default=["forward", "gram", "adam", "lbfgs"],
                 help="--bench: what to time, from forward,gram,adam,lbfgs")
  g.add_argument("--bench-dtypes", type=choice_list("fp32", "tf32", "fp16"), default=["fp32", "fp16"],
                 help="--bench: precisions from fp32,tf32,fp16 (tf32: fp32 on TF32 tensor cores)")
  p.preset("quick", size=48, steps=40, bench_sizes=[64], bench_dtypes=["fp32"])
  return p


def check_flags(p, args) -> None:
  """Combinations that cannot do what they say: one line each, before any work. Resolves --net."""
  if unused := [d for d in (DEMO_ONLY if args.bench else BENCH_ONLY) if d in args.given]:
    flag = "--" + unused[0].replace("_", "-")
    p.error(f"{flag} does nothing with --bench (it times the demo pictures; see --bench-sizes/-nets/-cases/-dtypes)" if args.bench
            else f"{flag} goes with --bench")
  args.net = args.net or ("vgg19" if args.weights else "random")
  nets = args.bench_nets if args.bench else [args.net]
  if args.weights and "vgg19" not in nets: p.error("--weights is for --net vgg19" + (" (add vgg19 to --bench-nets)" if args.bench else ""))
  if "vgg19" not in nets and (used := [f for f in ("pool", "conv") if f in args.given]): p.error(f"--{used[0]} is for --net vgg19")
  if "random" not in nets and (used := [f for f in ("filters", "kernel") if f in args.given]): p.error(f"--{used[0]} is for --net random")
  if args.kernel % 2 == 0: p.error(f"--kernel {args.kernel} must be odd (so padding keeps the size)")
  if not all(MIN_EDGE <= v <= MAX_EDGE for v in args.bench_sizes): p.error(f"--bench-sizes: each from {MIN_EDGE} to {MAX_EDGE} px")
  if args.bench: return
  if args.size // 2 ** (args.scales - 1) < 2 * MIN_EDGE:
    p.error(f"--size {args.size} with --scales {args.scales} leaves the coarsest scale below {2 * MIN_EDGE} px")
  if args.size * args.style_scale > MAX_EDGE: p.error(f"--size × --style-scale = {args.size * args.style_scale:g} px, over {MAX_EDGE} px")
  if not any(args.layer_weights): p.error("--layer-weights are all 0: there would be no style loss to lower")
  if all(w == 0 for w in (args.content_weight, args.style_weight, args.tv_weight)):
    p.error("--content-weight, --style-weight and --tv-weight are all 0: there is nothing to optimize")
  if args.load and "init" in args.given: p.error("--init and --load both choose the starting image: give one")
  if args.snapshot_every and args.snapshot_every > args.steps * args.scales:
    p.error(f"--snapshot-every {args.snapshot_every} is more than the {args.steps * args.scales} steps: no snapshot would be written")


def config_from_args(args) -> StyleConfig:
  weights = [d if v is None else v for v, d in zip((args.content_weight, args.style_weight, args.tv_weight), DEFAULT_WEIGHTS[args.net])]
  return StyleConfig(net=args.net, pool=args.pool, conv=args.conv, filters=args.filters, kernel=args.kernel, content_weight=weights[0],
                     style_weight=weights[1], tv_weight=weights[2], layer_weights=tuple(args.layer_weights), optimizer=args.optimizer,
                     lr=args.lr or DEFAULT_LR[args.optimizer], steps=args.steps, scales=args.scales, init=args.init, half=args.half, seed=args.seed)


def main() -> int:
  p = make_parser()
  args = p.parse_args()
  check_flags(p, args)
  common.seed_all(args.seed)
  return bench(args) if args.bench else demo(args)


if __name__ == "__main__":
  sys.exit(common.run_main(main))
