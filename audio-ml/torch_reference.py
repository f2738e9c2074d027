"""PyTorch reference for audio_classify.py --bench: the same log-mel workload with torch.stft.

    64 clips × 1 s at 16 kHz, n_fft 512, hop 160, Hann window, center (reflect), power 2,
    80 mel channels (HTK, no norm), natural log with a 1e-6 floor

torch.stft runs cuFFT on a GPU (an O(N log N) FFT); audio_classify.py computes the same numbers as
DFT matmuls in tinygrad (logmel.py: one dense (N, N) product, or two small ones after a Cooley-Tukey
split). The mel filterbank here is logmel's own, so both sides do exactly the same arithmetic after
the spectrum. Optional: torch is not a dependency.

    python3 audio-ml/torch_reference.py                     # cuda if available, else cpu
    python3 audio-ml/torch_reference.py --json out/audio-ml/torch.json --device cuda
"""
from __future__ import annotations
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import fail

PROJECT = "audio-ml"


def main() -> int:
  p = common.project_parser(PROJECT, __doc__, quick_help="fewer repeats and batch 8 (seconds)", save_help=None)
  p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
  args = p.parse_args()
  try:
    import torch
  except ImportError:
    fail("PyTorch is not installed (pip install torch); this reference is optional")
  import numpy as np
  from common.bench import Bench
  from logmel import mel_filterbank
  from audio_bench import BENCH_CFG as cfg                        # the workload audio_classify.py --bench times

  dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  try: torch.empty(1, device=dev)
  except Exception as e: fail(f"torch device {dev!r} is not usable ({type(e).__name__})")
  sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
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
  for n in (1, big):
    x = torch.tensor(rng.standard_normal((n, cfg.sample_rate)).astype(np.float32) * 0.1, device=dev)
    rec = b.run(f"torch.stft log-mel b={n}", lambda x=x: logmel(x), rate=(n, "clips/s"), sync=sync, **iters)
    rec["realtime_x"] = n / (rec["median_ms"] / 1e3)
  b.print("audio-ml PyTorch reference: log-mel (16 kHz, n_fft 512, hop 160, 80 mels)")
  b.write_json(args.json)
  return 0


if __name__ == "__main__":
  sys.exit(common.run_main(main))
