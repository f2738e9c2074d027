"""Generative models that learn and generate: a convolutional autoencoder and a DDPM, with sample
quality measured by a classifier the script trains itself.

THE DATA. Synthetic handwritten-style digits from common/digits.py (no download): each digit 0-9
drawn with Pillow with random glyph size, stroke width, rotation, shear, translation, elastic jitter
and noise, deterministically from --seed, with a held-out split. `--dataset shapes` gives coloured
geometric shapes (RGB) instead; `--data PATH` reads MNIST idx files (.gz or raw) or a folder of images
(class subfolders give labels; common.datasets reads both). Images x are (N, C, S, S) in [0, 1]; S = --size.

1. AUTOENCODER: compress, then reconstruct.
     encoder  x (B,C,S,S) -conv3x3/2-> (B,32,S/2,S/2) -conv3x3/2-> (B,64,S/4,S/4) -flatten-linear-> z (B,L)
     decoder  z -linear-> (B,64,S/4,S/4) -upsample x2, conv3x3-> (B,32,S/2,S/2) -upsample x2, conv3x3-> x̂ (B,C,S,S)
     loss     MSE(x̂, x) = mean (x̂ - x)^2, Adam, one TinyJit'd step; the output starts at the data's mean
              intensity (the last bias is its logit), not at 0.5 grey, from which mostly-black digits drive it to black.
   A 32-number z has to hold what matters about a 784-pixel digit; walking on a straight line between
   two digits' z and decoding shows what the latent space learned (ae_interpolation.png). The check:
   the held-out MSE must beat predicting the training set's mean image (a collapsed autoencoder that
   outputs one blurry or black image does not), and in the default setting also be <= 0.01.

2. DDPM (Ho et al. 2020): learn to undo gradual noising.
   Forward process, fixed: q(x_t | x_{t-1}) = N(sqrt(1-β_t) x_{t-1}, β_t I), t = 1..T, T = 1000, with
   β linear 1e-4 -> 0.02 or cosine (ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008).
   With α_t = 1 - β_t and ᾱ_t = α_1···α_t, the Gaussians compose in closed form:
       q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)   so   x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,  ε ~ N(0, I).
   Reverse process, learned: the posterior given x_0 is Gaussian (Bayes on two Gaussians),
       q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I),  β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t,
       μ̃_t = sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) · x_0 + sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t.
   Writing x_0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t) turns μ̃ into a function of ε:
       μ̃_t = 1/sqrt(α_t) · (x_t - β_t / sqrt(1 - ᾱ_t) · ε),
   so a network ε_θ(x_t, t) that predicts the noise defines p_θ(x_{t-1} | x_t). The variational bound
   reduces (dropping its per-t weights, as Ho et al. do) to the training objective
       L = E_{x_0, t ~ U{1..T}, ε} || ε - ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, t) ||².
   Training a step: pick t and ε per image, form x_t in one line, regress ε. Images are scaled to [-1, 1].
   Sampling, ancestral: x_T ~ N(0, I), then for t = T..1
       x̂_0 = clip((x_t - sqrt(1 - ᾱ_t) ε_θ) / sqrt(ᾱ_t), -1, 1),  x_{t-1} = μ̃_t(x̂_0, x_t) + sqrt(β̃_t) z
   (the same step as the ε form above, with x̂_0 kept inside the data range), T network calls.
   Sampling, DDIM (Song et al. 2021, η = 0): deterministic jumps over a subsequence τ of --ddim-steps
   timesteps: x_{τ'} = sqrt(ᾱ_{τ'}) x̂_0 + sqrt(1 - ᾱ_{τ'}) ε̂, 50 calls instead of 1000, with x̂_0 clipped as
   above and ε̂ = (x_τ - sqrt(ᾱ_τ) x̂_0) / sqrt(1 - ᾱ_τ) the noise that this x̂_0 implies (ε_θ itself where
   x̂_0 was in range). With the raw ε_θ instead, whatever the clip cut off x̂_0 returns into x_{τ'} with the
   opposite sign: guidance, which pushes x̂_0 far out of range, then turns guided samples into other classes.
   Network: a small U-Net. ε_θ(x_t, t, y): conv in -> [res block] at S, S/2, S/4 going down (each
   res block: GroupNorm, SiLU, conv3x3, + time embedding, GroupNorm, SiLU, conv3x3, + skip), self-
   attention at S/4, then up again with the skips concatenated; t enters as a sinusoidal embedding
   (sin/cos of t·10000^(-k/d)) through an MLP, added inside every res block.
   EMA: samples come from an exponential moving average of the weights (decay --ema), which is smoother
   than the last step's weights. --cond adds a class embedding y; labels are dropped to a "null" class
   10 % of the time so one network learns p(x|y) and p(x); classifier-free guidance samples with
   ε = ε_θ(x, ∅) + w (ε_θ(x, y) - ε_θ(x, ∅)), w = --guidance.

3. MEASURING SAMPLES. A small CNN classifier (the judge) is trained on the same data. On generated
   images it reports: the fraction classified with confidence >= 0.9, the class histogram (each class's
   share of the samples), and the Fréchet distance between its 128-d penultimate features for real
   held-out images and for samples:
       FD = |μ_r - μ_g|² + Tr(Σ_r + Σ_g - 2 (Σ_r Σ_g)^(1/2))      (the FID recipe with our own classifier).
   With --cond: the classifier's accuracy on samples of each requested class. The judge needs labels with
   at least 2 classes; without them the DDPM is checked by its loss alone.

RUN (writes to out/generative/): on a Jetson `NV=1 python3 generative/generative_models.py`, on a laptop
`python3 generative/generative_models.py` (tinygrad's CPU device).
  (default, or --train)   autoencoder on 6000 digits for 1500 steps (checks held-out MSE <= 0.01 and <= 0.5x
                          the mean image's), the judge (checks >= 98 % held-out), a width-16 DDPM for 800 steps
                          (checks its loss falls 3x and that the judge finds >= 45 % of 100 DDIM samples confident,
                          every class 1-30 % of them; with --cond a mean per-class accuracy >= 20 %). About 35 min of
                          DDPM on a 2-core CPU.
  --quick                 for tests, seconds: 600 digits, a width-8 U-Net, batch 16, few steps per model; checks
                          that the AE scores <= 0.75x the mean image's MSE, the judge reaches 50 %, the DDPM loss falls 3x
  --full                  the quality setting, sized for a GPU: 30000 digits, width-64 U-Net, batch 128, cosine β,
                          EMA 0.999, up to 20000 steps or 5 minutes of DDPM training (--ddpm-minutes), 1000
                          DDIM samples; checks >= 92 % confident samples with every class 7-13 %
                          (with --cond: >= 98 % accuracy for every requested class)
  --model autoencoder|diffusion|all (aliases ae, ddpm)   which models to train; --cond --guidance W for classes
  --train --steps N       train for N steps each model --model picks (the judge keeps --clf-steps)
  --schedule linear|cosine, --ddim-steps N, --ema D, --width C, --latent L, --size 28|32
  --bench                 times AE and DDPM train steps (batch 32/128, or --batch B alone), U-Net forward, sampling steps
                          (--model autoencoder / diffusion: only those cases; --full: the width-64 U-Net;
                          --quick: batch 16, width 8, no DDPM train step)
  --save PATH / --load PATH   all trained models in one .safetensors; --load evaluates them without training
  --json PATH             the timing records (common.bench schema): --bench's cases, or the demo's train steps
  JITBEAM=2               lets tinygrad search kernel schedules for the JIT'd steps (slow first call, faster after)
  --half                  mixed precision for the AE and the U-Net: convolutions in fp16 (the Orin's tensor cores), weights,
                          Adam and norms in fp32, the loss scaled so small gradients survive fp16 (common/mixed.py);
                          --bench then times the fp16 steps (H200, AE b=128: 1.94 ms against fp32's 2.07 ms in another call)
  --quick, --full and --train --steps change defaults only: a flag you type wins.
Outputs: ae_reconstructions.png (rows: input, output), ae_interpolation.png, ae_loss.png, classifier_loss.png,
ddpm_samples.png (DDIM), ddpm_samples_ancestral.png (with --ancestral-samples > 0), ddpm_denoising.png (one
sample from noise to image), ddpm_loss.png, summary.json (every figure printed, and the settings).

EXPECTED RESULTS: see generative/README.md for the figures measured on this code (2-core CPU; H200 with
DEV=CUDA). Orin figures have not been measured; expect the GPU setting to run there several times slower
than on the H200.
"""
from __future__ import annotations
import common  # noqa: F401  (first: turns NV=1 / CUDA=1 into DEV=... before tinygrad reads it)
import gc, math, sys, time
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, TinyJit, nn, dtypes
from tinygrad.helpers import Context, GlobalCounters
from tinygrad.nn.state import get_parameters

from common import UserError, check, log, progress, run_main
from common.conv import Conv2d
from common.mixed import LossScaler, half_precision
from common.train import predict_in_batches, realize_init, shuffled_batches

PROJECT, SCRIPT = "generative", "generative/generative_models.py"


# ==== 1. configuration =============================================================================

@dataclass(frozen=True)
class AEConfig:
  channels: int = 1
  size: int = 28                # S: the image side
  latent: int = 32              # L: the bottleneck
  lr: float = 1e-3
  steps: int = 1500
  batch: int = 32
  half: bool = False            # fp16 convolutions, fp32 weights, loss scaling (common/mixed.py)


@dataclass(frozen=True)
class DDPMConfig:
  channels: int = 1
  size: int = 28
  width: int = 16               # U-Net base channels C (widths C, 2C, 2C)
  n_classes: int = 0            # > 0: class-conditional, with classifier-free guidance
  T: int = 1000
  schedule: str = "linear"
  lr: float = 1e-3
  steps: int = 800
  batch: int = 32
  ema: float = 0.995            # EMA decay of the sampling weights
  p_uncond: float = 0.1         # how often training drops a label to the null class
  max_seconds: float | None = None
  guidance: float = 2.0         # w of classifier-free guidance
  ddim_steps: int = 50
  n_samples: int = 100          # DDIM samples the judge scores
  ancestral_samples: int = 4    # samples drawn with the T-step ancestral sampler
  half: bool = False            # fp16 convolutions, fp32 weights, loss scaling (common/mixed.py)


@dataclass(frozen=True)
class JudgeConfig:
  channels: int = 1
  size: int = 28
  n_classes: int = 10
  lr: float = 1e-3
  steps: int = 400
  batch: int = 32


@dataclass(frozen=True)
class Targets:
  """What "it worked" means in one setting; None: not checked there."""
  ae_vs_mean: float                        # held-out MSE / the mean image's MSE, at most
  ae_mse: float | None = None              # held-out MSE, at most
  judge_accuracy: float | None = None      # the judge's held-out accuracy, %, at least
  ddpm_loss_drop: float | None = 3.0       # first / last training loss, at least
  confident: float | None = None           # % of samples the judge classifies with p >= 0.9, at least
  class_share: tuple[float, float] | None = None   # every class's share of the samples, % (lowest, highest)
  cond_mean_accuracy: float | None = None  # --cond: mean of the per-class accuracies, %, at least
  cond_worst_accuracy: float | None = None  # --cond: the worst requested class's accuracy, %, at least


TARGETS = {
  "quick": Targets(ae_vs_mean=0.75, judge_accuracy=50.0),
  # measured in the default setting (generative/README.md): 100 DDIM samples 62 % confident, classes 3-18 %;
  # with --cond a mean per-class accuracy of 30 %. The bars sit about 3 binomial standard deviations below.
  "default": Targets(ae_vs_mean=0.5, ae_mse=0.01, judge_accuracy=98.0, confident=45.0, class_share=(1.0, 30.0), cond_mean_accuracy=20.0),
  # the quality bars of the --full setting. With 1000 samples a balanced class's share has a binomial standard
  # deviation of 0.95 points, so 7-13 % is +-3.2 sigma around 10 % (with 500 it would be +-2.2: a perfectly
  # balanced model would fail about one run in five).
  "full": Targets(ae_vs_mean=0.5, ae_mse=0.01, judge_accuracy=98.0, confident=92.0, class_share=(7.0, 13.0), cond_worst_accuracy=98.0),
}


# ==== 2. the math: the noise schedule and the forward process ======================================

def beta_schedule(kind: str, T: int) -> np.ndarray:
  """β_1..β_T (float64). linear: Ho et al.'s 1e-4 -> 0.02 (for T = 1000; scaled by 1000/T otherwise).
  cosine: Nichol & Dhariwal's ᾱ(t) = f(t)/f(0), β_t = 1 - ᾱ_t/ᾱ_{t-1}, capped at 0.999."""
  if kind == "linear":
    scale = 1000 / T
    return np.linspace(1e-4 * scale, 0.02 * scale, T, dtype=np.float64)
  s = 0.008
  f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
  return np.minimum(1 - f[1:] / f[:-1], 0.999)


class Schedule:
  """Every per-timestep constant of the forward and reverse process, index t-1 for timestep t."""
  def __init__(self, kind: str, T: int):
    self.T = T
    self.beta = beta_schedule(kind, T)
    self.alpha = 1 - self.beta
    self.alpha_bar = np.cumprod(self.alpha)                                  # ᾱ_t
    self.alpha_bar_prev = np.concatenate([[1.0], self.alpha_bar[:-1]])      # ᾱ_{t-1}, ᾱ_0 = 1
    self.posterior_var = self.beta * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)   # β̃_t
    self.coef_x0 = np.sqrt(self.alpha_bar_prev) * self.beta / (1 - self.alpha_bar)       # μ̃ = coef_x0 x_0 + coef_xt x_t
    self.coef_xt = np.sqrt(self.alpha) * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
    # on the device for training, gathered by the random t of each image (realized now, or the first train
    # step would copy them in and so differ from the later steps: TinyJit would schedule it twice)
    self.sqrt_ab = Tensor(np.sqrt(self.alpha_bar).astype(np.float32)).realize()
    self.sqrt_1m_ab = Tensor(np.sqrt(1 - self.alpha_bar).astype(np.float32)).realize()

  def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε for a batch of (0-based) timesteps t (B,)."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return self.sqrt_ab[t].reshape(shape) * x0 + self.sqrt_1m_ab[t].reshape(shape) * eps


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
  """Transformer-style sinusoids: [sin(t ω_k), cos(t ω_k)], ω_k = 10000^(-k/(d/2)), k < d/2. (B,) -> (B, d)."""
  half = dim // 2
  freqs = Tensor(np.exp(-math.log(10000) * np.arange(half) / half).astype(np.float32))
  angles = t.float().reshape(-1, 1) * freqs.reshape(1, half)
  return angles.sin().cat(angles.cos(), dim=1)


# ==== 3. the models ================================================================================

class Autoencoder:
  def __init__(self, channels: int, size: int, latent: int):
    self.side = size // 4                                  # two stride-2 convs: S -> S/2 -> S/4
    self.enc1, self.enc2 = Conv2d(channels, 32, 3, stride=2, padding=1), Conv2d(32, 64, 3, stride=2, padding=1)
    self.to_latent = nn.Linear(64 * self.side ** 2, latent)
    self.from_latent = nn.Linear(latent, 64 * self.side ** 2)
    self.dec1, self.dec2 = Conv2d(64, 32, 3, padding=1), Conv2d(32, channels, 3, padding=1)

  def encode(self, x: Tensor) -> Tensor:                   # (B, C, S, S) -> (B, L)
    h = self.enc2(self.enc1(x).silu()).silu()
    return self.to_latent(h.flatten(1))

  def decode(self, z: Tensor) -> Tensor:                   # (B, L) -> (B, C, S, S) in (0, 1)
    h = self.from_latent(z).silu().reshape(z.shape[0], 64, self.side, self.side)
    h = self.dec1(h, upsample=2).silu()
    return self.dec2(h, upsample=2).sigmoid()

  def __call__(self, x: Tensor) -> Tensor: return self.decode(self.encode(x))

  def start_at_mean(self, mean_pixel: np.ndarray) -> None:
    """Start the output at the data's mean intensity per channel (the last conv's bias is its logit). From
    sigmoid(0) = 0.5 grey, the first steps push every output of mostly-black digits to black, where the sigmoid
    saturates: measured, a --quick autoencoder started that way stayed at the all-black MSE for 150 steps."""
    m = np.clip(np.asarray(mean_pixel, np.float64), 1e-3, 1 - 1e-3)
    self.dec2.bias = Tensor(np.log(m / (1 - m)).astype(np.float32))


def group_norm(channels: int) -> nn.GroupNorm: return nn.GroupNorm(min(8, channels // 4), channels)


class ResBlock:
  """h = conv(SiLU(GN(x))) + W·temb;  out = skip(x) + conv(SiLU(GN(h)))."""
  def __init__(self, cin: int, cout: int, temb_dim: int):
    self.norm1, self.conv1 = group_norm(cin), Conv2d(cin, cout, 3, padding=1)
    self.temb = nn.Linear(temb_dim, cout)
    self.norm2, self.conv2 = group_norm(cout), Conv2d(cout, cout, 3, padding=1)
    self.skip = Conv2d(cin, cout, 1) if cin != cout else None

  def __call__(self, x: Tensor, temb: Tensor) -> Tensor:
    h = self.conv1(self.norm1(x).silu()) + self.temb(temb).reshape(x.shape[0], -1, 1, 1)
    h = self.conv2(self.norm2(h).silu())
    return (self.skip(x) if self.skip else x) + h


class SelfAttention:
  """One head over the H·W positions: softmax(Q Kᵀ / sqrt(C)) V, then a 1x1 projection, residual."""
  def __init__(self, channels: int):
    self.norm, self.qkv, self.proj = group_norm(channels), Conv2d(channels, 3 * channels, 1), Conv2d(channels, channels, 1)

  def __call__(self, x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).permute(1, 0, 3, 2)   # each (B, HW, C)
    out = q.scaled_dot_product_attention(k, v).permute(0, 2, 1).reshape(b, c, h, w)
    return x + self.proj(out)


class UNet:
  """ε_θ(x_t, t, y): three resolutions S, S/2, S/4 with widths (C, 2C, 2C); attention at S/4; skips by concatenation."""
  def __init__(self, channels: int, width: int, n_classes: int = 0):
    c1, c2, td = width, 2 * width, 4 * width
    self.width, self.n_classes = width, n_classes
    self.temb1, self.temb2 = nn.Linear(width, td), nn.Linear(td, td)
    # class n_classes is the "no label" token of classifier-free guidance
    self.label_emb = nn.Embedding(n_classes + 1, td) if n_classes else None
    self.conv_in = Conv2d(channels, c1, 3, padding=1)
    self.down0, self.pool0 = ResBlock(c1, c1, td), Conv2d(c1, c1, 3, stride=2, padding=1)
    self.down1, self.pool1 = ResBlock(c1, c2, td), Conv2d(c2, c2, 3, stride=2, padding=1)
    self.down2, self.attn_down = ResBlock(c2, c2, td), SelfAttention(c2)
    self.mid1, self.attn_mid, self.mid2 = ResBlock(c2, c2, td), SelfAttention(c2), ResBlock(c2, c2, td)
    self.up2, self.attn_up = ResBlock(c2 + c2, c2, td), SelfAttention(c2)
    self.upconv1, self.up1 = Conv2d(c2, c2, 3, padding=1), ResBlock(c2 + c2, c1, td)
    self.upconv0, self.up0 = Conv2d(c1, c1, 3, padding=1), ResBlock(c1 + c1, c1, td)
    self.norm_out, self.conv_out = group_norm(c1), Conv2d(c1, channels, 3, padding=1)
    # start as "predict ε = 0": the first steps do not fight random outputs
    self.conv_out.weight, self.conv_out.bias = Tensor.zeros(*self.conv_out.weight.shape), Tensor.zeros(channels)

  def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
    temb = self.temb2(self.temb1(timestep_embedding(t, self.width)).silu())       # (B, 4C)
    if self.label_emb is not None and y is not None: temb = temb + self.label_emb(y)
    temb = temb.silu()
    h0 = self.down0(self.conv_in(x), temb)                                       # (B, C, S, S)
    h1 = self.down1(self.pool0(h0), temb)                                        # (B, 2C, S/2, S/2)
    h2 = self.attn_down(self.down2(self.pool1(h1), temb))                        # (B, 2C, S/4, S/4)
    h = self.mid2(self.attn_mid(self.mid1(h2, temb)), temb)
    h = self.attn_up(self.up2(h.cat(h2, dim=1), temb))
    h = self.up1(self.upconv1(h, upsample=2).cat(h1, dim=1), temb)              # (B, C, S/2, S/2)
    h = self.up0(self.upconv0(h, upsample=2).cat(h0, dim=1), temb)              # (B, C, S, S)
    return self.conv_out(self.norm_out(h).silu())                                # ε̂ (B, channels, S, S)


class Classifier:
  """The judge: conv3x3 32 -> max-pool -> conv3x3 64 -> max-pool -> linear 128 (the features) -> linear K."""
  def __init__(self, channels: int, size: int, n_classes: int):
    self.conv1, self.conv2 = Conv2d(channels, 32, 3, padding=1), Conv2d(32, 64, 3, padding=1)
    self.fc = nn.Linear(64 * (size // 4) ** 2, 128)
    self.head = nn.Linear(128, n_classes)

  def features(self, x: Tensor) -> Tensor:                 # (B, C, S, S) -> (B, 128)
    h = self.conv1(x).relu().max_pool2d(2)                 # (B, 32, S/2, S/2)
    h = self.conv2(h).relu().max_pool2d(2)                 # (B, 64, S/4, S/4)
    return self.fc(h.flatten(1)).relu()

  def __call__(self, x: Tensor) -> Tensor: return self.head(self.features(x))


def make_unets(cfg: DDPMConfig) -> tuple[UNet, UNet]:
  """The trained U-Net and its EMA, which starts as a copy of the initial weights (clones, so its buffers
  are updated apart from the model's)."""
  unet, ema = UNet(cfg.channels, cfg.width, cfg.n_classes), UNet(cfg.channels, cfg.width, cfg.n_classes)
  realize_init(unet)
  for e, p in zip(get_parameters(ema), get_parameters(unet)): e.replace(p.detach().clone())
  realize_init(ema)
  return unet, ema


# ==== 4. training ==================================================================================

def make_ae_step(model: Autoencoder, lr: float, half: bool = False):
  """One Adam step on the reconstruction MSE; half: fp16 convolutions with loss scaling (common.mixed)."""
  if half: half_precision(model)
  opt = nn.optim.Adam(get_parameters(model), lr=lr)
  scaler = LossScaler(opt, enabled=half)
  realize_init(opt)
  @TinyJit
  def step(x: Tensor) -> Tensor:
    with Context(TRAINING=1):
      opt.zero_grad()
      # .contiguous(): the reconstruction gets its own buffer. Left lazy, the scheduler fuses the last conv
      # into the loss's reduction, one thread per image computing all 3·32·32 outputs (28 ms of a 40 ms
      # step on the H200); materialised, that conv is an ordinary kernel with an output per pixel.
      loss = ((model(x).contiguous() - x) ** 2).mean()
      scaler.backward(loss)
      scaler.step(loss)
    return loss
  return step


def make_ddpm_step(model: UNet, ema: UNet, sched: Schedule, lr: float, p_uncond: float, half: bool = False):
  """One step of L = || ε - ε_θ(x_t, t, y) ||², then the EMA update e <- d e + (1 - d) p.
  half: the U-Net's convolutions in fp16, its weights and the EMA in fp32, the loss scaled (common.mixed)."""
  if half: half_precision(model)
  params, ema_params = get_parameters(model), get_parameters(ema)
  opt = nn.optim.Adam(params, lr=lr)
  scaler = LossScaler(opt, enabled=half)
  realize_init(opt, ema)
  @TinyJit
  def step(x0: Tensor, y: Tensor, ema_decay: Tensor) -> Tensor:
    with Context(TRAINING=1):
      b = x0.shape[0]
      t = Tensor.randint(b, low=0, high=sched.T)                 # 0-based: index t means timestep t+1
      eps = Tensor.randn(*x0.shape)
      if model.n_classes: y = (Tensor.rand(b) < p_uncond).where(model.n_classes, y)   # drop labels for CFG
      loss = ((model(sched.q_sample(x0, t, eps), t, y) - eps) ** 2).mean()
      opt.zero_grad()
      scaler.backward(loss)
      updates = scaler.schedule_step()
      for e, p in zip(ema_params, params): e.assign(ema_decay * e + (1 - ema_decay) * p.detach())
      Tensor.realize(loss, *updates, *ema_params)
    return loss
  return step


def make_classifier_step(model: Classifier, lr: float):
  opt = nn.optim.Adam(get_parameters(model), lr=lr)
  realize_init(opt)
  @TinyJit
  def step(x: Tensor, y: Tensor) -> Tensor:
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = model(x).sparse_categorical_crossentropy(y)
      loss.backward()
      opt.step()
    return loss.realize()
  return step


def ema_decay_at(step: int, target: float) -> float:
  """Warm-up for the EMA (as in many DDPM codebases): early on, average over the steps seen so far."""
  return min(target, (1 + step) / (10 + step))


def train_loop(name: str, step_fn, data_x: np.ndarray, data_y: np.ndarray | None, steps: int, batch: int, rng,
               extra=lambda i: (), max_seconds: float | None = None) -> tuple[list[float], list[float]]:
  """Feed `steps` random minibatches to a TinyJit'd step (fewer when `max_seconds` runs out)
  -> (the loss of each step, the seconds each step took)."""
  losses, seconds = [], []
  batch_ids = shuffled_batches(len(data_x), batch, rng)
  bar = progress(range(steps), desc=name)
  t0 = time.perf_counter()
  for i in bar:
    if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
      log(f"{name}: time budget of {max_seconds / 60:.1f} min reached after {i} of {steps} steps")
      break
    GlobalCounters.reset()           # so DEBUG=2 shows this step's kernels and memory
    idx = next(batch_ids)
    inputs = (Tensor(data_x[idx]),) + ((Tensor(data_y[idx].astype(np.int32)),) if data_y is not None else ()) + extra(i)
    t_step = time.perf_counter()
    losses.append(float(step_fn(*inputs).item()))
    seconds.append(time.perf_counter() - t_step)
    if not math.isfinite(losses[-1]): raise UserError(f"{name}: the training loss became {losses[-1]} at step {i + 1}; lower the learning rate")
    if i % 20 == 0: bar.set_description(f"{name} loss {losses[-1]:.4f}")
  return losses, seconds


def loss_drop(losses: list[float]) -> float:
  """How many times smaller the loss became: mean of the first 5 % of the steps (at most 50, so that a long run's start
  is still its start: the loss falls most in the first few hundred steps) over mean of the last 10 %."""
  k0, k1 = max(1, min(len(losses) // 20, 50)), max(1, len(losses) // 10)
  return float(np.mean(losses[:k0]) / max(np.mean(losses[-k1:]), 1e-12))


# ==== 5. sampling ==================================================================================

class Sampler:
  """Runs the reverse process with the EMA network. One TinyJit'd function per sampler; the
  per-step constants go in as one small tensor so every step replays the same kernels."""
  def __init__(self, model: UNet, sched: Schedule, guidance: float):
    self.model, self.sched, self.guidance = model, sched, guidance
    self.ancestral_step, self.ddim_step = TinyJit(self._ancestral), TinyJit(self._ddim)

  def eps(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
    if not self.model.n_classes: return self.model(x, t)
    # classifier-free guidance: conditional and unconditional predictions in one batch
    null = Tensor.full(y.shape, self.model.n_classes, dtype=dtypes.int32)
    e = self.model(x.cat(x, dim=0), t.cat(t, dim=0), y.cat(null, dim=0))
    e_cond, e_uncond = e[:x.shape[0]], e[x.shape[0]:]
    return e_uncond + self.guidance * (e_cond - e_uncond)

  def _x0_hat(self, x, eps, sqrt_ab, sqrt_1m_ab):
    return ((x - sqrt_1m_ab * eps) / sqrt_ab).clip(-1, 1)

  def _ancestral(self, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
    # c = [t, sqrt ᾱ_t, sqrt(1-ᾱ_t), coef_x0, coef_xt, sqrt β̃_t]
    t = c[0].cast(dtypes.int32).reshape(1).expand(x.shape[0])
    x0 = self._x0_hat(x, self.eps(x, t, y), c[1], c[2])
    return (c[3] * x0 + c[4] * x + c[5] * Tensor.randn(*x.shape)).realize()

  def _ddim(self, x: Tensor, y: Tensor, c: Tensor) -> Tensor:
    # c = [t, sqrt ᾱ_t, sqrt(1-ᾱ_t), sqrt ᾱ_t', sqrt(1-ᾱ_t')] with t' the next (earlier) timestep
    t = c[0].cast(dtypes.int32).reshape(1).expand(x.shape[0])
    x0 = self._x0_hat(x, self.eps(x, t, y), c[1], c[2])
    # the noise that the clipped x̂_0 leaves in x_t: guidance pushes x̂_0 well outside [-1, 1], and the raw ε
    # would carry the clipped-off excess into x_t' with the opposite sign (guided digits turned into others)
    eps = (x - c[1] * x0) / c[2]
    return (c[3] * x0 + c[4] * eps).realize()

  def ancestral_coefs(self, i: int) -> Tensor:
    s = self.sched
    return Tensor(np.array([i, math.sqrt(s.alpha_bar[i]), math.sqrt(1 - s.alpha_bar[i]), s.coef_x0[i], s.coef_xt[i],
                            math.sqrt(s.posterior_var[i]) if i > 0 else 0.0], dtype=np.float32))

  def ddim_timesteps(self, steps: int) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, self.sched.T - 1, steps)}, reverse=True)

  def ddim_coefs(self, i: int, j: int) -> Tensor:
    ab, ab_next = self.sched.alpha_bar[i], (self.sched.alpha_bar[j] if j >= 0 else 1.0)
    return Tensor(np.array([i, math.sqrt(ab), math.sqrt(1 - ab), math.sqrt(ab_next), math.sqrt(1 - ab_next)], dtype=np.float32))

  def sample(self, y: np.ndarray, channels: int, size: int, method: str, ddim_steps: int = 50, keep: int = 0, desc: str = ""):
    """Generate len(y) images -> (images in [0, 1] (N, C, S, S), snapshots of image 0 along the way)."""
    x = Tensor.randn(len(y), channels, size, size).realize()
    yt = Tensor(y.astype(np.int32))
    if method == "ancestral":
      plan = [self.ancestral_coefs(i) for i in range(self.sched.T - 1, -1, -1)]
      fn = self.ancestral_step
    else:
      ts = self.ddim_timesteps(ddim_steps)
      plan = [self.ddim_coefs(i, j) for i, j in zip(ts, ts[1:] + [-1])]
      fn = self.ddim_step
    snap_at = set(np.linspace(0, len(plan) - 1, keep).astype(int)) if keep else set()
    snaps = []
    for k, c in enumerate(progress(plan, desc=desc or f"{method} sampling")):
      x = fn(x, yt, c)
      if k in snap_at: snaps.append(((x[0] + 1) / 2).clip(0, 1).numpy())
    return ((x + 1) / 2).clip(0, 1).numpy(), snaps


# ==== 6. evaluation: reconstruction baseline, the judge's scores, Fréchet distance =================

def mean_image_mse(x_train: np.ndarray, x_test: np.ndarray) -> float:
  """The held-out MSE of predicting the training set's mean image for every input: what an autoencoder
  that ignores its input reaches at best (one that outputs black does worse still)."""
  return float(((x_test - x_train.mean(0, keepdims=True)) ** 2).mean())


def classify(model: Classifier, x: np.ndarray, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
  """-> (softmax probabilities (N, K), features (N, 128)), in fixed-size batches so one JIT serves all."""
  run = TinyJit(lambda xb: model(xb).softmax().cat(model.features(xb), dim=1).realize())
  both = predict_in_batches(run, x, batch)
  k = model.head.weight.shape[0]
  return both[:, :k], both[:, k:]


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float | None:
  """|μ_a - μ_b|² + Tr(Σ_a + Σ_b - 2 (Σ_a Σ_b)^½). Tr((Σ_a Σ_b)^½) = Σ sqrt(eig(Σ_a^½ Σ_b Σ_a^½)),
  a symmetric PSD matrix, so two eigh calls do it without scipy's sqrtm. None when it is not defined:
  fewer than 2 rows on a side (no covariance) or a non-finite feature."""
  if min(len(feat_a), len(feat_b)) < 2 or not (np.isfinite(feat_a).all() and np.isfinite(feat_b).all()): return None
  mu_a, mu_b = feat_a.mean(0), feat_b.mean(0)
  cov_a, cov_b = np.atleast_2d(np.cov(feat_a, rowvar=False)), np.atleast_2d(np.cov(feat_b, rowvar=False))
  try:
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a), 0, None)).sum()
  except np.linalg.LinAlgError: return None
  return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def sample_quality(probs: np.ndarray, n_classes: int, requested: np.ndarray | None = None) -> dict:
  pred, conf = probs.argmax(1), probs.max(1)
  q = {"confident_fraction": float((conf >= 0.9).mean()),
       "class_fractions": (np.bincount(pred, minlength=n_classes) / len(pred)).tolist()}
  if requested is not None:
    q["per_class_accuracy"] = [float((pred[requested == k] == k).mean()) for k in range(n_classes)]
  return q


# ==== 7. success checks ============================================================================

def check_autoencoder(mse: float, baseline: float, targets: Targets) -> bool:
  """Must beat the mean image (a collapsed model does not); the absolute bar where the setting has one."""
  ok = check("autoencoder held-out MSE / mean image's MSE", mse / baseline, targets.ae_vs_mean, higher_is_better=False)
  if targets.ae_mse is not None: ok &= check("autoencoder held-out MSE", mse, targets.ae_mse, higher_is_better=False)
  return ok


def check_judge(accuracy: float, targets: Targets) -> bool:
  return targets.judge_accuracy is None or check("judge held-out accuracy", accuracy * 100, targets.judge_accuracy, unit=" %")


def check_diffusion(quality: dict | None, drop: float | None, conditional: bool, targets: Targets) -> bool:
  """The loss must fall (when trained here); the judge's view of the samples where the setting sets bars."""
  ok = True
  if drop is not None and targets.ddpm_loss_drop is not None:
    ok &= check("DDPM loss drop (first/last)", drop, targets.ddpm_loss_drop, unit="x")
  if quality is None: return ok
  shares = [f * 100 for f in quality["class_fractions"]]
  if targets.confident is not None and not conditional:
    ok &= check("DDPM confident samples", quality["confident_fraction"] * 100, targets.confident, unit=" %")
  if targets.class_share is not None and not conditional:
    ok &= check("DDPM rarest class share", min(shares), targets.class_share[0], unit=" %")
    if targets.class_share[1] < 100: ok &= check("DDPM commonest class share", max(shares), targets.class_share[1], higher_is_better=False, unit=" %")
  if conditional and targets.cond_mean_accuracy is not None:
    ok &= check("DDPM mean per-class accuracy", float(np.mean(quality["per_class_accuracy"])) * 100, targets.cond_mean_accuracy, unit=" %")
  if conditional and targets.cond_worst_accuracy is not None:
    ok &= check("DDPM worst per-class accuracy", min(quality["per_class_accuracy"]) * 100, targets.cond_worst_accuracy, unit=" %")
  return ok


# --- plumbing -------------------------------------------------------------------------------------
# The data, checkpoints, the demo's stages, the bench and the command line live in generative_demo.py,
# beside this file; they use the models above and are re-exported here.
sys.modules.setdefault("generative_models", sys.modules[__name__])   # run as a script, the demo module imports this one by name
from generative_demo import (FULL, QUICK, Data, configs, demo, load_data, load_idx, load_image_folder,  # noqa: E402, F401
                             parse_args, parts_needed, run_bench)


def main(argv=None) -> int:
  args = parse_args(argv)
  status = run_bench(args) if args.bench else demo(args)
  # tinygrad's caches now hold millions of small objects; frozen, the garbage collector's last passes at
  # interpreter exit skip them (measured: a --quick run ended ~10 s sooner on a 2-core CPU)
  gc.freeze()
  return status


if __name__ == "__main__":
  sys.exit(run_main(main))
