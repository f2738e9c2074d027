"""audio_classify.py --bench: the hot paths, timed with common.bench.

The log-mel anchor workload (64 clips x 1 s at 16 kHz, n_fft 512, hop 160, 80 mels) in every DFT form
and framing, in fp16 and with TF32 allowed, each with its largest error against numpy's rfft; numpy's
rfft itself as the CPU baseline; the classifier at its training configuration (8 kHz, 40 mels x 101
frames) at batch 1 and 64; and one training step. `--cases` picks groups, `--quick` shrinks it to seconds.
"""
from dataclasses import replace

import numpy as np
from tinygrad import Tensor, TinyJit, nn, dtypes
from tinygrad.helpers import Context
from tinygrad.nn.state import get_parameters

from common.bench import Bench
from common.train import realize_init
from common.mixed import LossScaler, half_precision
from audio_classify import PROJECT, SYNTH_CLASSES, AudioCNN, make_predict, spec_augment
from logmel import MelConfig, LogMel, window, mel_filterbank


def numpy_logmel(waves: np.ndarray, cfg: MelConfig, fb: np.ndarray) -> np.ndarray:
  """The CPU baseline: float32 numpy, strided frames and np.fft.rfft."""
  N = cfg.n_fft
  x = np.pad(waves, ((0, 0), (N // 2, N // 2)), mode="reflect") if cfg.center else waves
  frames = np.lib.stride_tricks.sliding_window_view(x, N, axis=1)[:, ::cfg.hop]     # (B, T, N) view
  power = np.abs(np.fft.rfft(frames * window(cfg).astype(np.float32), axis=-1)) ** 2
  return np.log(np.maximum(power.astype(np.float32) @ fb, cfg.log_floor)).transpose(0, 2, 1)


BENCH_CFG = MelConfig(sample_rate=16000, n_fft=512, win_length=512, hop=160, n_mels=80, fmin=0.0, mel_scale="htk", mel_norm="none")


def bench(args) -> int:
  """The anchor's log-mel workload (1 s at 16 kHz, n_fft 512, hop 160, 80 mels) in every form, numpy's
  rfft, and the classifier at its training configuration (8 kHz, 40 mels x 101 frames)."""
  b, rng, big = Bench(PROJECT), np.random.default_rng(args.seed), 8 if args.quick else 64
  iters = dict(warmup=2, iters=3, max_seconds=2.0) if args.quick else dict(warmup=3, iters=20, min_seconds=1.0, max_seconds=20.0)
  clips = {n: rng.standard_normal((n, BENCH_CFG.sample_rate)).astype(np.float32) * 0.1 for n in (1, big)}
  if "logmel" in args.cases: bench_logmel(b, clips, big, args.quick, iters)
  if "numpy" in args.cases:
    fb = mel_filterbank(BENCH_CFG).astype(np.float32)
    for n in (1, big):
      b.run(f"numpy rfft log-mel b={n}", lambda n=n: numpy_logmel(clips[n], BENCH_CFG, fb), rate=(n, "clips/s"),
            sync=lambda: None, **iters, audio_s_per_call=n * 1.0)
  if args.cases & {"classify", "train"}: bench_classifier(b, args, rng, big, iters)
  for r in b.records:                  # real-time factor: seconds of audio per second of compute
    r["realtime_x"] = r.pop("audio_s_per_call") / (r["median_ms"] / 1e3)
  b.print("audio-ml: log-mel (16 kHz, n_fft 512, hop 160, 80 mels) and classifier (8 kHz, 40 mels)")
  print("\n| case | real-time factor (audio s / compute s) | max abs log-mel error vs numpy |\n|---|---:|---:|")
  for r in b.records:
    err = f"{r['max_abs_err_vs_numpy']:.1e}" if "max_abs_err_vs_numpy" in r else ""
    print(f"| {r['case']} | {r['realtime_x']:,.0f}x | {err} |")
  b.write_json(args.json)
  return 0


def bench_logmel(b: Bench, clips: dict[int, np.ndarray], big: int, quick: bool, iters: dict) -> None:
  device_clips = {n: Tensor(c).realize() for n, c in clips.items()}
  dense = {f: LogMel(replace(BENCH_CFG, dft="dense", framing=f)) for f in LogMel.FRAMINGS}      # same numbers, different kernels
  factored = {f: LogMel(replace(BENCH_CFG, framing=f)) for f in ("unfold", "gather")}
  fb = mel_filterbank(BENCH_CFG).astype(np.float32)
  def case(name, frontend, n, tf32=False):
    # ALLOW_TF32 is read when kernels compile, so the context spans the JIT's capture (and any BEAM search)
    with Context(ALLOW_TF32=int(tf32)):
      jit = TinyJit(lambda x: frontend(x).realize())
      rec = b.run(f"{name} b={n}", lambda: jit(device_clips[n]), rate=(n, "clips/s"), **iters, audio_s_per_call=n * 1.0)
      # what the speed costs in accuracy: the largest log-mel difference from numpy's rfft
      rec["max_abs_err_vs_numpy"] = float(np.abs(jit(device_clips[n]).numpy() - numpy_logmel(clips[n], BENCH_CFG, fb)).max())
  case("log-mel conv", dense["conv"], 1)
  case("log-mel unfold factored", factored["unfold"], 1)
  for framing in (("conv",) if quick else LogMel.FRAMINGS): case(f"log-mel {framing}", dense[framing], big)
  for framing in (("unfold",) if quick else ("unfold", "gather")): case(f"log-mel {framing} factored", factored[framing], big)
  if quick: return
  case("log-mel unfold factored fp16-DFT", LogMel(replace(BENCH_CFG, framing="unfold"), dtypes.half), big)
  case("log-mel unfold factored tf32-DFT", factored["unfold"], big, tf32=True)
  for framing in ("conv", "unfold"):
    case(f"log-mel {framing} fp16-DFT", LogMel(replace(BENCH_CFG, dft="dense", framing=framing), dtypes.half), big)
    case(f"log-mel {framing} tf32-DFT", dense[framing], big, tf32=True)


def bench_classifier(b: Bench, args, rng: np.random.Generator, big: int, iters: dict) -> None:
  cfg = MelConfig(dft=args.dft, framing=args.framing)          # the training configuration: (40, 101) log-mel
  frontend, model = LogMel(cfg), AudioCNN(len(SYNTH_CLASSES), args.widths, cfg.n_mels)
  predict = {n: make_predict(frontend, model) for n in (1, big)}          # one JIT per input shape
  waves = {n: Tensor(rng.standard_normal((n, cfg.sample_rate)).astype(np.float32) * 0.1).realize() for n in (1, big)}
  if "classify" in args.cases:
    b.run("classify (log-mel+CNN) b=1", lambda: predict[1](waves[1]), **iters, audio_s_per_call=1.0)
    b.run(f"classify (log-mel+CNN) b={big}", lambda: predict[big](waves[big]), rate=(big, "clips/s"), **iters, audio_s_per_call=big * 1.0)
  if args.quick or "train" not in args.cases: return        # --quick (tests): the train step's compile alone takes longer than the rest
  if args.half: half_precision(model)
  opt = nn.optim.Adam(get_parameters(model), lr=1e-3)
  scaler = LossScaler(opt, enabled=args.half)
  labels = Tensor(rng.integers(0, len(SYNTH_CLASSES), big).astype(np.int32)).realize()
  @TinyJit
  def train_step(wave, y):
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = model(spec_augment(frontend(wave))).sparse_categorical_crossentropy(y)
      scaler.backward(loss)
      scaler.step(loss)
      return loss
  realize_init(model, opt)
  b.run(f"train step b={big}" + (" fp16" if args.half else ""), lambda: train_step(waves[big], labels), rate=(big, "clips/s"), **iters,
        audio_s_per_call=big * 1.0)
