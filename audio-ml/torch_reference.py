"""PyTorch reference for audio_classify.py --bench: the same log-mel workload with torch.stft, and the
same classifier training step.

    log-mel   64 clips × 1 s at 16 kHz, n_fft 512, hop 160, Hann window, center (reflect), power 2,
              80 mel channels (HTK, no norm), natural log with a 1e-6 floor
    train     64 clips × 1 s at 8 kHz -> log-mel (40 mels, the training front end) -> SpecAugment ->
              AudioCNN layer for layer (BatchNorm of the input; [conv3x3 no bias -> BatchNorm -> ReLU ->
              max-pool 2×2] per width; mean and max over time; dropout 0.2; linear) -> cross-entropy, Adam

torch.stft runs cuFFT on a GPU (an O(N log N) FFT); audio_classify.py computes the same numbers as
DFT matmuls in tinygrad (logmel.py: one dense (N, N) product, or two small ones after a Cooley-Tukey
split). The mel filterbank here is logmel's own, so both sides do exactly the same arithmetic after
the spectrum. Optional: torch is not a dependency.

    python3 audio-ml/torch_reference.py                     # cuda if available, else cpu
    python3 audio-ml/torch_reference.py --json out/audio-ml/torch.json --device cuda
    python3 audio-ml/torch_reference.py --cases train --half   # the train step in fp16 autocast + GradScaler
"""
from __future__ import annotations
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import fail
from common.bench import TF32_MODES
from common.cli import choice_list, int_list

PROJECT = "audio-ml"


def main() -> int:
  p = common.project_parser(PROJECT, __doc__, quick_help="fewer repeats and batch 8 (seconds)", save_help=None)
  p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
  p.add_argument("--cases", type=choice_list("logmel", "train"), default=["logmel", "train"], help="what to time: logmel,train")
  p.add_argument("--widths", type=int_list, default=[16, 32, 64], help="conv widths of the classifier, as in audio_classify.py")
  p.add_argument("--compile", action="store_true", help="also time the torch.compile'd train step")
  p.add_argument("--half", action="store_true", help="train step in mixed precision, as audio_classify.py --half: the CNN under fp16 "
                 "autocast (the log-mel front end stays fp32), fp32 weights, a GradScaler")
  p.add_argument("--tf32", choices=TF32_MODES, default="default", help="TF32 tensor cores for fp32 convs/matmuls (default: PyTorch's own)")
  args = p.parse_args()
  try:
    import torch
  except ImportError:
    fail("PyTorch is not installed (pip install torch); this reference is optional")
  import numpy as np
  from common.bench import Bench, torch_tf32
  from logmel import mel_filterbank
  from audio_bench import BENCH_CFG as cfg                        # the workload audio_classify.py --bench times

  dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  try: torch.empty(1, device=dev)
  except Exception as e: fail(f"torch device {dev!r} is not usable ({type(e).__name__})")
  sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
  tf32 = torch_tf32(torch, args.tf32)
  fb = torch.tensor(mel_filterbank(cfg), dtype=torch.float32, device=dev)            # (257, 80)
  window = torch.hann_window(cfg.n_fft, periodic=True, device=dev)
  big = 8 if args.quick else 64
  iters = dict(warmup=2, iters=3) if args.quick else dict(warmup=5, iters=50, min_seconds=1.0)
  rng = np.random.default_rng(args.seed)

  @torch.inference_mode()
  def logmel(x):                                                    # (B, L) -> (B, 80, T)
    spec = torch.stft(x, cfg.n_fft, cfg.hop, cfg.win_length, window, center=True, pad_mode="reflect", return_complex=True)
    power = spec.real.square() + spec.imag.square()                 # (B, 257, T)
    return torch.log(torch.clamp(torch.matmul(power.transpose(1, 2), fb), min=cfg.log_floor)).transpose(1, 2)

  b = Bench(PROJECT, device=f"torch:{dev}", renderer=f"torch {torch.__version__}")
  for n in ((1, big) if "logmel" in args.cases else ()):
    x = torch.tensor(rng.standard_normal((n, cfg.sample_rate)).astype(np.float32) * 0.1, device=dev)
    rec = b.run(f"torch.stft log-mel b={n}", lambda x=x: logmel(x), rate=(n, "clips/s"), sync=sync, **iters)
    rec["realtime_x"] = n / (rec["median_ms"] / 1e3)
  if "train" in args.cases and not args.quick:           # as in audio_classify.py --bench, --quick leaves the train step out
    for compiled in ((False, True) if args.compile else (False,)):
      train_step_case(b, torch, dev, args.widths, big, compiled, rng, dict(iters, sync=sync, tf32=tf32), args.half)
  b.print("audio-ml PyTorch reference: log-mel (16 kHz, n_fft 512, hop 160, 80 mels) and the classifier's train step")
  b.write_json(args.json)
  return 0


def train_step_case(b, torch, dev: str, widths: list[int], batch: int, compiled: bool, rng, iters: dict, half: bool = False) -> None:
  """audio_classify.py's train step (audio_bench.bench_classifier) in PyTorch: same front end, model and loss."""
  import numpy as np
  from torch import nn
  from logmel import MelConfig, mel_filterbank, window
  from audio_classify import SYNTH_CLASSES
  cfg = MelConfig()                                                  # the training front end: 8 kHz, 40 mels, 101 frames
  fb = torch.tensor(mel_filterbank(cfg), dtype=torch.float32, device=dev)
  win = torch.tensor(window(cfg), dtype=torch.float32, device=dev)     # win_length zero-padded in the middle of n_fft

  def logmel(x):
    spec = torch.stft(x, cfg.n_fft, cfg.hop, cfg.n_fft, win, center=True, pad_mode="reflect", return_complex=True)
    return torch.log(torch.clamp((spec.real.square() + spec.imag.square()).transpose(1, 2) @ fb, min=cfg.log_floor)).transpose(1, 2)

  def spec_augment(m, max_freq=8, max_time=20):                     # one band of < 8 mels and one span of < 20 frames per clip
    B, M, T = m.shape
    def band(size, max_width):
      width = (torch.rand(B, 1, device=dev) * max_width).floor()
      start = (torch.rand(B, 1, device=dev) * (size - width)).floor()
      pos = torch.arange(size, device=dev).reshape(1, size)
      return (pos >= start) & (pos < start + width)
    masked = band(M, max_freq).reshape(B, M, 1) | band(T, max_time).reshape(B, 1, T)
    return torch.where(masked, m.mean(dim=(1, 2), keepdim=True), m)

  class AudioCNN(nn.Module):
    def __init__(self, n_classes, widths, n_mels):
      super().__init__()
      chans = [1] + list(widths)
      self.input_norm = nn.BatchNorm2d(1)
      self.convs = nn.ModuleList(nn.Conv2d(a, c, 3, padding=1, bias=False) for a, c in zip(chans, chans[1:]))
      self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in widths)
      self.head, self.drop = nn.Linear(2 * widths[-1] * (n_mels >> len(widths)), n_classes), nn.Dropout(0.2)

    def forward(self, m):
      x = self.input_norm(m.unsqueeze(1))
      for conv, norm in zip(self.convs, self.norms): x = nn.functional.max_pool2d(torch.relu(norm(conv(x))), 2)
      return self.head(self.drop(torch.cat([x.mean(dim=3), x.amax(dim=3)], dim=1).flatten(1)))

  model = AudioCNN(len(SYNTH_CLASSES), widths, cfg.n_mels).to(dev).train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  scaler = torch.amp.GradScaler(dev.split(":")[0], enabled=half)
  fwd = torch.compile(model) if compiled else model
  wave = torch.tensor(rng.standard_normal((batch, cfg.sample_rate)).astype(np.float32) * 0.1, device=dev)
  labels = torch.tensor(rng.integers(0, len(SYNTH_CLASSES), batch), device=dev)

  def step():
    opt.zero_grad(set_to_none=True)
    m = spec_augment(logmel(wave))
    with torch.autocast(device_type=dev.split(":")[0], dtype=torch.float16, enabled=half):
      loss = nn.functional.cross_entropy(fwd(m).float(), labels)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss

  b.run(f"train step b={batch}" + (" fp16" if half else "") + (" (torch.compile)" if compiled else ""), step, rate=(batch, "clips/s"), **iters,
        params=sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
  sys.exit(common.run_main(main))
