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

  The network is fixed; the only parameter is the image x: (1, 3, H, W), which we initialize from the
  content image (or the style image, or noise) and improve by gradient steps, ∂L/∂x by autograd.
  Optimizers: Adam (tinygrad.nn.optim) or L-BFGS (written below: the two-loop recursion, without a
  line search, as torch.optim.LBFGS in the PyTorch tutorial and jcjohnson/neural-style use it).
  After each update the pixels are clipped to [0, 1] (a projected step, as the PyTorch tutorial does).
  One step = forward + backward + update, all inside one TinyJit, so JITBEAM=N tunes its kernels.
  α:β ≈ 1:1e6 with L-BFGS for 300 steps at 512 px is the PyTorch tutorial's VGG-19 recipe.

TWO FEATURE NETWORKS
  --net vgg19 --weights vgg19.pth   VGG-19 exactly as torchvision's vgg19().features (keys
      features.{0,2,5,…,34}.weight/bias), average pooling by default (Gatys) or --pool max. Layer shapes
      at input H×W: conv1_1 (64, H, W), conv2_1 (128, H/2, W/2), conv3_1 (256, H/4), conv4_1/conv4_2
      (512, H/8), conv5_1 (512, H/16). Pretrained ImageNet weights are what make the classic, painterly
      results: deep layers then respond to objects and brush strokes. Nothing can be downloaded here, so
      the weights come from the user: on a Jetson or laptop with internet,
        python3 -c "import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')"
      leaves ~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth (548 MB); pass it with --weights (a
      .safetensors export with the same keys works too). Without --weights, --net vgg19 has random
      weights: right for timing (--bench), not for pictures. Its convolutions are written as im2col + a
      matmul (conv2d_im2col, below) so that the input gradient is fast; --conv direct uses conv2d.
  --net random (the default)   a random multi-scale feature network, after Ustyuzhaninov et al. 2016
      ("Texture synthesis using shallow convolutional networks with random filters"): random filters,
      ReLU, Gram matrices work as texture descriptors if there are many filters at several scales. Here:
      an image pyramid x_0 = x, x_k = avgpool2(x_{k−1}) (k = 0…4) and at each level its own bank of
      --filters random k×k filters (--kernel), f_k = ReLU(W_k ∗ x_k + b_k): (F, H/2^k, W/2^k). So the
      scales match VGG's five style layers (receptive fields 5 … 80 px) and content is taken at level 3
      (H/8, like conv4_2). What changes with real VGG weights: random filters capture colours, edge
      orientations and blob sizes — style transfers as palette, strokes and texture — but not learned
      motifs (VGG's "brush strokes that follow object contours"); content is kept as coarse luminance
      structure rather than as object parts.

SHAPES: image (1, 3, H, W) in [0, 1]; normalized with ImageNet mean/std before either network;
  --size is the long edge of the result (aspect ratio kept); the style image is resized so its long edge
  is --size × --style-scale. Images: anything Pillow reads (grayscale and RGBA are converted; transparent
  pixels become white). Without --content/--style the script draws a demo landscape and a mosaic style.

RUN
  laptop / any CPU:  python3 style-transfer/style_transfer.py                 (demo: 256 px, Adam, 300 steps)
  Jetson Orin:       NV=1 python3 style-transfer/style_transfer.py --size 512
  your images:       python3 style-transfer/style_transfer.py --content me.jpg --style wave.png --size 512
  real VGG-19:       ... --net vgg19 --weights vgg19-dcbb9e9d.pth --optimizer lbfgs --size 512
  coarse to fine:    ... --scales 3   (run at size/4, size/2, size; each scale starts from the last)
  timing:            python3 style-transfer/style_transfer.py --bench --json out/bench.json
  try: JITBEAM=2 (kernel search for the JIT'd step), --half (fp16 network), --init noise, --pool max.

OUTPUT (under --out, default out/style-transfer/): result.png, panel.png (content | style | result),
  losses.png (loss curves), snapshots/ (--snapshot-every N), summary.json, and --save PATH writes the
  image as .safetensors so --load PATH can continue from it.

SUCCESS CHECK: the style loss must fall to ≤ 5 % of its value at the initial image, while the content
  loss stays ≤ 80 % of the content loss of the *style picture itself* (resized to the content's shape):
  the result must stay nearer the content than the style image is, in the content layer's feature
  space. The bound is loose on purpose: the random network's content layer also encodes colour, which
  stylization is meant to change (the default demo lands at 0.55 while every shape stays visible in
  panel.png). Exit 1 if either part fails.

EXPECTED RESULTS (measured on this code; commands and machines in style-transfer/README.md)
  2-core CPU (tinygrad CPU device, shared with other jobs): the default demo (256x192, random features,
  Adam, 300 steps) passes with style 0.0070 of its start and content 0.55 of the style picture's, in
  115.6 CPU-seconds (6 min wall under load; ~2 min expected on an idle machine). A VGG-19 Adam step at
  64 px took 0.38 s there (1.6 s with --conv direct, under heavier load): use a GPU for VGG. NVIDIA H200 (DEV=CUDA): the demo at 512 px passes in 10.9 s
  of steps; a VGG-19 Adam step at 512 px takes 41.3 ms in fp32 without BEAM and 14.9 ms with JITBEAM=2
  (PyTorch with TF32 off: 18.6 ms; the one-time BEAM search takes minutes at this size). Jetson Orin AGX: expected to be several times slower than the H200; not measured.
"""
import common  # first: turns NV=1 / CUDA=1 / CPU=1 into DEV=... before tinygrad reads it
import gc, math, sys, time
from pathlib import Path

import numpy as np
from tinygrad import Tensor, TinyJit, GlobalCounters, Device, dtypes
from tinygrad.helpers import Context
from tinygrad.nn.optim import Adam, Optimizer

from common import UserError, files, plots
from common.bench import Bench
from common.cli import positive_int, positive_float, nonnegative_float

PROJECT = "style-transfer"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_EDGE = 16   # both networks pool four times before their deepest layer

# ---------------------------------------------------------------------------------------------------
# 1. Images: the built-in demo pair, reading files, resizing
# ---------------------------------------------------------------------------------------------------

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
  d = (y[..., None] - centres[:, 0]) ** 2 + (x[..., None] - centres[:, 1]) ** 2   # (H, W, n)
  order = np.argsort(d, axis=-1)
  nearest, second = order[..., 0], order[..., 1]
  d1 = np.sqrt(np.take_along_axis(d, nearest[..., None], -1)[..., 0])
  d2 = np.sqrt(np.take_along_axis(d, second[..., None], -1)[..., 0])
  scale = max(h, w) / 256.0                           # stripes and lead lines scale with the picture
  a = angle[nearest]
  stripes = 0.75 + 0.25 * np.sin((x * np.cos(a) + y * np.sin(a)) / (2.2 * scale))
  img = colour[nearest] * stripes[..., None]
  img[(d2 - d1) < 2.5 * scale] = (0.08, 0.06, 0.05)  # lead lines where two cells meet
  return np.clip(img, 0, 1)


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
  """(H, W, 3) float in [0, 1] -> (h, w, 3), Lanczos (antialiased when shrinking)."""
  from PIL import Image
  u8 = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
  return np.asarray(u8.resize((w, h), Image.LANCZOS), np.float32) / 255.0


def fit_long_edge(h: int, w: int, long_edge: int, what: str) -> tuple[int, int]:
  """Size with the long edge = `long_edge`, aspect ratio kept; one-line error if it gets too thin."""
  s = long_edge / max(h, w)
  nh, nw = max(1, round(h * s)), max(1, round(w * s))
  if min(nh, nw) < MIN_EDGE:
    raise UserError(f"{what} would be {nw}x{nh} px at long edge {long_edge}: the short edge must be >= {MIN_EDGE} px "
                    f"(use a larger --size or a less elongated image)")
  return nh, nw


def load_image(path: str | None, long_edge: int, what: str, demo) -> np.ndarray:
  """A file (any format Pillow reads: grayscale, palette and RGBA become RGB) or the demo drawing,
  resized to the long edge. -> (H, W, 3) float32 in [0, 1]."""
  if path is None:
    h, w = fit_long_edge(3, 4, long_edge, what)       # the demo pictures are 4:3
    return demo(h, w)
  arr = files.read_image(path, "RGB").astype(np.float32) / 255.0
  h, w = fit_long_edge(arr.shape[0], arr.shape[1], long_edge, f"{what} {path}")
  return resize(arr, h, w)


def to_tensor(img: np.ndarray) -> Tensor:
  """(H, W, 3) numpy -> (1, 3, H, W) Tensor on the default device."""
  return Tensor(np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32)).realize()


def to_numpy(x: Tensor) -> np.ndarray:
  """(1, 3, H, W) Tensor -> (H, W, 3) numpy, clipped to [0, 1] for viewing."""
  return np.clip(x.numpy()[0].transpose(1, 2, 0), 0, 1)


def imagenet_normalize(x: Tensor) -> Tensor:
  mean = Tensor(IMAGENET_MEAN, dtype=x.dtype).reshape(1, 3, 1, 1)
  std = Tensor(IMAGENET_STD, dtype=x.dtype).reshape(1, 3, 1, 1)
  return (x - mean) / std

# ---------------------------------------------------------------------------------------------------
# 2. Feature networks. Both map an image (1, 3, H, W) in [0, 1] to {layer name: (1, C, h, w)} and
#    name which layers carry style and which one carries content.
# ---------------------------------------------------------------------------------------------------

# torchvision's vgg19 "E" configuration: numbers are 3x3 conv widths (each followed by ReLU), M = pool.
VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg19_layout() -> list[tuple[str, int, int, int]]:
  """[(name, index in features, in_channels, out_channels)] for the 16 convs, indexed exactly as in
  torchvision's nn.Sequential (conv, relu, conv, relu, pool, ...): conv1_1 = features.0, conv4_2 =
  features.21, conv5_1 = features.28."""
  layout, idx, cin, block, pos = [], 0, 3, 1, 1
  for v in VGG19_CFG:
    if v == "M": idx, block, pos = idx + 1, block + 1, 1; continue
    layout.append((f"conv{block}_{pos}", idx, cin, v))
    idx, cin, pos = idx + 2, v, pos + 1
  return layout


def conv2d_im2col(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
  """A stride-1 "same" convolution written as im2col and a matmul; the same result as
  x.conv2d(w, b, padding=k//2).  x: (B, C, H, W), w: (O, C, k, k) -> (B, O, H, W).

    cols[b, c, t, i, j] = x_pad[b, c, i + dy_t, j + dx_t]       t = (dy, dx), k² shifted views of x
    y[b, o, i, j]       = Σ_{c,t} w[o, c, t] · cols[b, c, t, i, j] + bias[o]

  Why write it out: style transfer only needs ∂L/∂x, the convolution's *input* gradient. For tinygrad's
  conv2d, autograd derives it through the pooling view conv2d is built on, which comes out as a masked
  4×4 window per pixel and ran at ~1.5 TFLOP/s on the H200, a tenth of the forward's speed (per-kernel
  profile of the Adam step). From the lines above autograd derives exactly the textbook backward instead:

    ∂L/∂cols[b, c, t, i, j] = Σ_o w[o, c, t] · ∂L/∂y[b, o, i, j]      a matmul, like the forward
    ∂L/∂x                   = Σ_t (∂L/∂cols[:, :, t] shifted back by −(dy_t, dx_t))   "col2im": k² adds

  The cols tensor is never stored (its k² views are read inside the matmul's kernel); the gradient
  ∂L/∂cols is, k²·C·H·W numbers, for the col2im sum. --conv direct uses conv2d, to compare."""
  (n, c, h, wd), (o, _, k, _) = x.shape, w.shape
  xp = x.pad((k // 2,) * 4)
  cols = Tensor.stack(*[xp[:, :, dy:dy + h, dx:dx + wd] for dy in range(k) for dx in range(k)], dim=2)
  y = (cols.reshape(n, 1, c, k * k, h, wd) * w.reshape(1, o, c, k * k, 1, 1)).sum((2, 3))
  return (y + b.reshape(1, o, 1, 1)).contiguous_backward()


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


def load_vgg19_weights(path: str) -> dict[str, Tensor]:
  """Read a torchvision VGG-19 checkpoint (.pth/.pt via tinygrad's torch loader, or .safetensors) and
  check every features.N key and shape; classifier.* (the full model's head) is ignored. A state dict
  of vgg19().features alone (keys '0.weight', ...) is accepted too."""
  from tinygrad.nn.state import torch_load, safe_load
  p = Path(path)
  if not p.is_file(): raise UserError(f"weights {p}: no such file")
  suffix = p.suffix.lower()
  if suffix not in (".pth", ".pt", ".safetensors"):
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


def blur_downsample(x: Tensor) -> Tensor:
  """One step of a Gaussian (Burt-Adelson) pyramid: blur with the binomial kernel [1 4 6 4 1]/16 in
  both directions, keep every second pixel. (1, C, H, W) -> (1, C, ceil(H/2), ceil(W/2)). Plain 2x2
  averaging would also halve the size, but its gradient is constant over 2^k-pixel blocks, which the
  optimized image then shows as a grid; the overlapping blur spreads the gradient smoothly."""
  c = x.shape[1]
  taps = Tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype) / 16
  kernel = (taps.reshape(5, 1) * taps.reshape(1, 5)).reshape(1, 1, 5, 5).expand(c, 1, 5, 5)
  return x.pad((2, 2, 2, 2), mode="replicate").conv2d(kernel, groups=c, stride=2)


class RandomFeatures:
  """Random multi-scale features: level k sees the image averaged down 2^k times and applies its own
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
      out[name] = x.conv2d(w.cast(dtype), b.cast(dtype), padding=self.kernel // 2).relu()
    return out

# ---------------------------------------------------------------------------------------------------
# 3. Losses
# ---------------------------------------------------------------------------------------------------

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

# ---------------------------------------------------------------------------------------------------
# 4. L-BFGS in tinygrad (Adam comes from tinygrad.nn.optim)
# ---------------------------------------------------------------------------------------------------

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

# ---------------------------------------------------------------------------------------------------
# 5. The optimization: targets once, then a JIT'd step that only the image changes
# ---------------------------------------------------------------------------------------------------

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


def make_net(args):
  if args.net == "vgg19":
    state = load_vgg19_weights(args.weights) if args.weights else None
    return VGG19Features(args.pool, state, args.conv)
  return RandomFeatures(args.filters, args.kernel)


STYLE_TARGET = 0.05   # success: final style loss <= 5 % of the initial image's
CONTENT_BOUND = 0.8   # ... while the content loss stays <= 80 % of the style picture's own content loss

DEFAULT_WEIGHTS = {  # (content α, style β, tv γ) for each network's feature scale
  "vgg19": (1.0, 1e6, 1e-2),       # the PyTorch tutorial's α:β; γ keeps L-BFGS from grainy pixels
  "random": (1.0, 3e4, 1e-2),      # random features are weaker; β measured so Adam and L-BFGS both pass
}


def stylize(args, net, content_np: np.ndarray, style_np: np.ndarray, init_np: np.ndarray | None, out: Path):
  """Coarse-to-fine: run --steps at each of --scales resolutions (size/2^(n-1) … size), each starting
  from the previous result upsampled. Returns the final problem, the initial image (at full size), the
  result and the per-step loss log."""
  alpha, beta, gamma = [d if v is None else v for v, d in zip((args.content_weight, args.style_weight, args.tv_weight),
                                                               DEFAULT_WEIGHTS[args.net])]
  lw = dict(zip(net.style_layers, args.layer_weights))
  dtype = dtypes.float16 if args.half else dtypes.float32
  H, W = content_np.shape[:2]
  log, result, initial, rng = [], None, None, np.random.default_rng(args.seed)
  for k in reversed(range(args.scales)):
    h, w = max(MIN_EDGE, round(H / 2 ** k)), max(MIN_EDGE, round(W / 2 ** k))
    c = content_np if k == 0 else resize(content_np, h, w)
    sh, sw = style_np.shape[:2]
    s = style_np if k == 0 else resize(style_np, max(MIN_EDGE, round(sh / 2 ** k)), max(MIN_EDGE, round(sw / 2 ** k)))
    if result is not None: start = resize(result, h, w)
    elif init_np is not None: start = resize(init_np, h, w) if init_np.shape[:2] != (h, w) else init_np
    elif args.init == "content": start = c
    elif args.init == "style": start = resize(style_np, h, w)
    else: start = rng.uniform(0.25, 0.75, size=(h, w, 3)).astype(np.float32)
    if initial is None: initial = resize(start, H, W) if start.shape[:2] != (H, W) else start
    prob = StyleProblem(net, to_tensor(c), to_tensor(s), to_tensor(start), (alpha, beta, gamma), lw,
                        args.optimizer, args.lr, dtype)
    bar = common.progress(range(args.steps), desc=f"{w}x{h}")
    for i in bar:
      GlobalCounters.reset()                      # so DEBUG=2 shows per-step kernel time and memory
      total, lc, ls, ltv = prob.step().numpy()
      if not np.isfinite(total): raise UserError(f"the loss became {total} at step {i} of {w}x{h}: lower --lr or the weights")
      log.append({"scale": f"{w}x{h}", "step": len(log), "total": float(total), "content": float(lc), "style": float(ls), "tv": float(ltv)})
      bar.set_description(f"{w}x{h} style {ls:.3g} content {lc:.3g}")
      if args.snapshot_every and (len(log) % args.snapshot_every == 0):
        files.save_image(to_numpy(prob.image), out / "snapshots" / f"step_{len(log):05d}.png")
    result = to_numpy(prob.image)
  return prob, initial, result, log

# ---------------------------------------------------------------------------------------------------
# 6. --bench: forward, Gram, one Adam / L-BFGS step, fp32 and fp16, device memory held
# ---------------------------------------------------------------------------------------------------

def bench(args) -> int:
  sizes = [64] if args.quick else args.bench_sizes
  nets = args.bench_nets
  b = Bench(PROJECT)
  for net_name in nets:
    Tensor.manual_seed(args.seed)
    net = VGG19Features(args.pool, load_vgg19_weights(args.weights) if args.weights and net_name == "vgg19" else None, args.conv) \
      if net_name == "vgg19" else RandomFeatures(args.filters, args.kernel)
    lw = {n: 1.0 for n in net.style_layers}
    for size in sizes:
      h, w = size, size
      content, style = to_tensor(demo_content(h, w)), to_tensor(demo_style(h, w))
      for precision in (["fp32"] if args.quick else args.bench_dtypes):
        # tf32: float32 tensors, but matmuls/convs on TF32 tensor cores (10-bit mantissa products, fp32
        # sums), as cuDNN does by default in PyTorch; ALLOW_TF32 is read when the kernels compile
        dtype, tf32 = (dtypes.float16 if precision == "fp16" else dtypes.float32), precision == "tf32"
        tag = f"{net_name} {size}px {precision}"
        with Context(ALLOW_TF32=int(tf32)):
          iters, limit = (3, 5.0) if args.quick else (20, 20.0)
          if "forward" in args.bench_cases:
            # contiguous: each feature map is computed by its own conv kernel, as in the step. A bare .sum()
            # would let the scheduler fuse each layer's last conv into the reduction (a few threads doing it all)
            fwd = TinyJit(lambda: Tensor.stack(*[f.contiguous().float().sum() for f in net(content, dtype).values()]).realize())
            b.run(f"{tag} forward", fwd, rate=(1, "img/s"), iters=iters, max_seconds=limit)
            del fwd
          if "gram" in args.bench_cases:
            feats = {n: f.realize() for n, f in net(content, dtype).items()}
            grams = TinyJit(lambda: Tensor.stack(*[gram(feats[n]).sum() for n in net.style_layers]).realize())
            b.run(f"{tag} gram (style layers)", grams, iters=iters, max_seconds=limit)
            del grams, feats
          for opt in [o for o in ("adam", "lbfgs") if o in args.bench_cases]:
            gc.collect()
            base = GlobalCounters.mem_used
            prob = StyleProblem(net, content, style, content, DEFAULT_WEIGHTS[net_name], lw, opt, 0.02 if opt == "adam" else 1.0, dtype)
            rec = b.run(f"{tag} {opt} step", prob.step, rate=(1, "steps/s"), iters=iters, max_seconds=limit)
            # after capture the JIT holds every buffer its kernels use (memory-planned once), so this is
            # what one step needs at its peak: weights, image, targets, optimizer state, activations
            rec["device_mem_MB"] = GlobalCounters.mem_used / 1e6
            rec["step_mem_MB"] = (GlobalCounters.mem_used - base) / 1e6
            del prob
    del net
  b.print(f"{PROJECT}: style-transfer hot paths")
  steps = [r for r in b.records if r["case"].endswith("step")]
  print("\ndevice memory held during a step (GlobalCounters.mem_used after JIT capture):")
  for r in steps: print(f"  {r['case']}: {r['device_mem_MB']:.1f} MB total, {r['step_mem_MB']:.1f} MB for the step")
  b.write_json(args.json)
  return 0

# ---------------------------------------------------------------------------------------------------
# 7. The demo
# ---------------------------------------------------------------------------------------------------

def parse_args():
  p = common.project_parser(PROJECT, __doc__, quick_help="48 px, 40 steps: seconds, for tests")
  g = p.add_argument_group("style transfer")
  g.add_argument("--content", metavar="PATH", help="content image; none: the built-in landscape")
  g.add_argument("--style", metavar="PATH", help="style image; none: the built-in mosaic")
  g.add_argument("--size", type=positive_int, default=256, help="long edge of the result in px")
  g.add_argument("--style-scale", type=positive_float, default=1.0, help="style image long edge = size × this")
  g.add_argument("--net", choices=["random", "vgg19"], default=None, help="feature network; none: vgg19 with --weights, else random")
  g.add_argument("--weights", metavar="PATH", help="torchvision VGG-19 weights (.pth or .safetensors)")
  g.add_argument("--pool", choices=["avg", "max"], default="avg", help="VGG pooling (Gatys: average)")
  g.add_argument("--conv", choices=["im2col", "direct"], default="im2col",
                 help="how VGG's convolutions are written: im2col + matmul (fast input gradient) or tinygrad's conv2d")
  g.add_argument("--filters", type=positive_int, default=64, help="random net: filters per pyramid level")
  g.add_argument("--kernel", type=positive_int, default=5, help="random net: filter size (odd)")
  g.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam", help="how the pixels are updated")
  g.add_argument("--lr", type=positive_float, default=None, help="step size; none: 0.02 for Adam, 1.0 for L-BFGS")
  g.add_argument("--steps", type=positive_int, default=300, help="optimization steps per scale")
  g.add_argument("--scales", type=positive_int, default=1, help="coarse-to-fine: number of resolutions, each ×2")
  g.add_argument("--init", choices=["content", "style", "noise"], default="content", help="starting image")
  g.add_argument("--content-weight", type=nonnegative_float, default=None, help="α; none: per --net (DEFAULT_WEIGHTS in the script)")
  g.add_argument("--style-weight", type=nonnegative_float, default=None, help="β; none: per --net")
  g.add_argument("--tv-weight", type=nonnegative_float, default=None, help="γ; none: per --net")
  g.add_argument("--layer-weights", type=lambda s: [nonnegative_float(v) for v in s.split(",")], default=[1.0] * 5,
                 help="w_l for the five style layers, comma-separated")
  g.add_argument("--half", action="store_true", help="run the feature network in fp16 (Gram and losses stay fp32)")
  g.add_argument("--snapshot-every", type=positive_int, default=None, metavar="N", help="save the image every N steps")
  g.add_argument("--bench-sizes", type=lambda s: common.cli.int_list(s), default=[256, 512], help="--bench: square sizes")
  g.add_argument("--bench-nets", type=lambda s: s.split(","), default=["vgg19", "random"], help="--bench: networks")
  g.add_argument("--bench-cases", type=lambda s: s.split(","), default=["forward", "gram", "adam", "lbfgs"],
                 help="--bench: what to time, from forward,gram,adam,lbfgs")
  g.add_argument("--bench-dtypes", type=lambda s: s.split(","), default=["fp32", "fp16"], help="--bench: precisions from fp32,tf32,fp16 (tf32: fp32 on TF32 tensor cores)")
  args = p.parse_args()
  args.net = args.net or ("vgg19" if args.weights else "random")
  if args.weights and args.net != "vgg19": p.error("--weights is for --net vgg19")
  if args.kernel % 2 == 0: p.error(f"--kernel {args.kernel} must be odd (so padding keeps the size)")
  if len(args.layer_weights) != 5: p.error(f"--layer-weights needs 5 values, got {len(args.layer_weights)}")
  if any(n not in ("vgg19", "random") for n in args.bench_nets): p.error("--bench-nets: choose from vgg19,random")
  if any(c not in ("forward", "gram", "adam", "lbfgs") for c in args.bench_cases): p.error("--bench-cases: choose from forward,gram,adam,lbfgs")
  if any(d not in ("fp32", "tf32", "fp16") for d in args.bench_dtypes): p.error("--bench-dtypes: choose from fp32,tf32,fp16")
  if args.quick: args.size, args.steps = min(args.size, 48), min(args.steps, 40)
  if min(args.size // 2 ** (args.scales - 1), args.size) < 2 * MIN_EDGE:
    p.error(f"--size {args.size} with --scales {args.scales} leaves the coarsest scale below {2 * MIN_EDGE} px")
  args.lr = args.lr or (0.02 if args.optimizer == "adam" else 1.0)
  return args


def main() -> int:
  args = parse_args()
  common.seed_all(args.seed)
  if args.bench: return bench(args)
  if args.json: raise UserError("--json goes with --bench (the demo writes summary.json under --out)")
  out = files.out_dir(args.out)
  t0 = time.perf_counter()
  content = load_image(args.content, args.size, "content image", demo_content)
  style = load_image(args.style, round(args.size * args.style_scale), "style image", demo_style)
  init = None
  if args.load:
    tensors, meta = files.load_checkpoint(args.load)
    if "image" not in tensors or tensors["image"].ndim != 4 or tensors["image"].shape[:2] != (1, 3):
      raise UserError(f"checkpoint {args.load} holds no (1, 3, H, W) 'image' (write one with --save)")
    init = to_numpy(tensors["image"])
    if init.shape[:2] != content.shape[:2]:
      raise UserError(f"checkpoint {args.load} image is {init.shape[1]}x{init.shape[0]} px, this run is "
                      f"{content.shape[1]}x{content.shape[0]} (same --size and content as the saved run)")
  net = make_net(args)
  print(f"{args.net} features on {Device.DEFAULT}: content {content.shape[1]}x{content.shape[0]}, style "
        f"{style.shape[1]}x{style.shape[0]}, {args.optimizer} x {args.steps} steps x {args.scales} scale(s)")
  prob, start_img, result, log = stylize(args, net, content, style, init, out)
  elapsed = time.perf_counter() - t0

  # success check at the final resolution, against the initial image and the style image
  H, W = content.shape[:2]
  style_as_content = resize(style, H, W)
  start = prob.evaluate(to_tensor(start_img))
  final = prob.evaluate(to_tensor(result))
  style_pic = prob.evaluate(to_tensor(style_as_content))
  style_ratio = final[2] / max(start[2], 1e-30)
  content_ratio = final[1] / max(style_pic[1], 1e-30)

  files.save_image(result, out / "result.png")
  panel = plots.image_grid(np.stack([content, style_as_content, result]), nrow=3, pad=4)
  files.save_image(panel, out / "panel.png")
  plots.plot_curves(out / "losses.png", {k: [r[k] for r in log] for k in ("total", "content", "style", "tv")},
                    title=f"{args.net} features, {args.optimizer}", xlabel="step (all scales)", ylabel="loss", logy=True)
  if args.save:
    files.save_checkpoint({"image": Tensor(np.ascontiguousarray(result.transpose(2, 0, 1)[None]))}, args.save,
                          metadata={"size": args.size, "net": args.net, "steps": len(log)})
    print(f"saved the image to {args.save}")
  ok_style = common.check("style loss / initial style loss", style_ratio, STYLE_TARGET, higher_is_better=False)
  ok_content = common.check("content loss / content loss of the style image", content_ratio, CONTENT_BOUND, higher_is_better=False)
  summary = {"net": args.net, "optimizer": args.optimizer, "size": [W, H], "steps": len(log), "scales": args.scales,
             "device": Device.DEFAULT, "seconds": elapsed, "style_ratio": style_ratio, "content_ratio": content_ratio,
             "start_losses": dict(zip(("total", "content", "style", "tv"), start.tolist())),
             "final_losses": dict(zip(("total", "content", "style", "tv"), final.tolist())),
             "passed": bool(ok_style and ok_content), "log": log}
  files.save_json(summary, out / "summary.json")
  print(f"{len(log)} steps in {elapsed:.1f} s; wrote {out}/result.png, panel.png, losses.png, summary.json")
  return 0 if ok_style and ok_content else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
