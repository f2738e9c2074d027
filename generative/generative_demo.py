"""The plumbing of generative_models.py: data, checkpoints, the demo's stages, --bench and the command
line. The tutorial and the math are in generative_models.py; this module uses its models and checks."""
from __future__ import annotations
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tinygrad import Tensor, TinyJit
from tinygrad.helpers import GlobalCounters
from tinygrad.nn.state import get_parameters, get_state_dict

from common import UserError, project_parser, seed_all
from common.cli import check_out_dir, float_range, nonnegative_float, nonnegative_int, positive_float, positive_int, probability
from common.files import save_checkpoint, save_image, save_json
from common.plots import image_grid, plot_curves
from common.train import predict_in_batches, realize_init
from generative_models import __doc__ as MODULE_DOC
from generative_models import (PROJECT, SCRIPT, TARGETS, AEConfig, Autoencoder, Classifier, DDPMConfig, JudgeConfig, Sampler, Schedule,
                               Targets, UNet, check_autoencoder, check_diffusion, check_judge, classify, ema_decay_at, frechet_distance,
                               loss_drop, make_ae_step, make_classifier_step, make_ddpm_step, make_unets, mean_image_mse, sample_quality,
                               train_loop)


@dataclass
class Data:
  x_train: np.ndarray      # (N, C, S, S) float32 in [0, 1]
  y_train: np.ndarray      # (N,) int64, -1 where unlabelled
  x_test: np.ndarray
  y_test: np.ndarray
  names: tuple[str, ...]   # class names; empty when unlabelled
  source: str

  @property
  def judged(self) -> bool:
    """Can a classifier judge the samples? It needs labels of at least two classes."""
    return len(self.names) >= 2 and bool((self.y_train >= 0).all())


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
  """(N, H, W[, C]) float in [0, 1] -> (N, C, size, size) float32, bilinear, each channel as a float image."""
  from PIL import Image
  if images.ndim == 3: images = images[..., None]
  if images.shape[1:3] == (size, size): return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
  def resized(channel: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(channel.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
  return np.clip(np.stack([[resized(im[..., c]) for c in range(im.shape[-1])] for im in images]), 0, 1).astype(np.float32)


def load_idx(path: Path, size: int) -> Data:
  """MNIST idx files (common.datasets); without a t10k pair the last sixth is held out (MNIST's own ratio)."""
  from common.datasets import load_idx_pairs
  (x, y), test = load_idx_pairs(path)
  x = resize_batch(x.astype(np.float32) / 255.0, size)
  if test is None:
    if len(x) < 2: raise UserError(f"--data {path}: {len(x)} image; need at least 2 (one to hold out)")
    cut = len(x) - max(1, len(x) // 6)
    xte, yte, x, y = x[cut:], y[cut:], x[:cut], y[:cut]
  else: xte, yte = resize_batch(test[0].astype(np.float32) / 255.0, size), test[1]
  names = tuple(str(i) for i in range(int(max(y.max(), yte.max())) + 1))
  return Data(x, y, xte, yte, names, f"MNIST idx files at {path}")


def load_image_folder(path: Path, size: int, seed: int) -> Data:
  """Class subfolders (their names are the labels) or images directly (no labels); greyscale unless some
  image has colour. A tenth of each class, chosen by --seed, is held out."""
  from common.datasets import IMAGE_SUFFIXES, holdout_split, scan_labelled
  from common.files import read_image
  files, labels = scan_labelled(path, IMAGE_SUFFIXES)
  rgb = [read_image(f, 3) for f in files]
  colour = any(np.abs(a - a[..., :1]).max() > 8 / 255 for a in rgb)
  x = np.stack([resize_batch((a if colour else a[..., :1])[None], size)[0] for a in rgb])
  names = tuple(sorted(set(labels))) if labels is not None else ()
  y = np.array([names.index(lab) for lab in labels] if labels is not None else [-1] * len(files), dtype=np.int64)
  test = holdout_split(np.array(labels) if labels is not None else None, len(x), 0.1, np.random.default_rng(seed))
  return Data(x[~test], y[~test], x[test], y[test], names, f"image folder {path} ({len(x)} images{', RGB' if colour else ''})")


def load_data(args) -> Data:
  if args.data is None:
    from common.digits import DIGIT_NAMES, SHAPE_NAMES, digit_splits, shape_splits
    if args.dataset == "shapes":
      return Data(*shape_splits(args.n_train, args.n_test, args.seed, args.size), SHAPE_NAMES, "synthetic coloured shapes (common/digits.py)")
    return Data(*digit_splits(args.n_train, args.n_test, args.seed, args.size), DIGIT_NAMES, "synthetic digits (common/digits.py)")
  from common.datasets import is_idx
  path = Path(args.data)
  return load_idx(path, args.size) if is_idx(path) else load_image_folder(path, args.size, args.seed)


def check_data_fits(data: Data, args) -> None:
  """What the run needs of the data, checked before any training."""
  n, channels = len(data.x_train), data.x_train.shape[1]
  if args.cond and not data.judged:
    raise UserError(f"--cond needs labels of at least 2 classes, and {data.source} has {len(data.names) or 'no'} (use class subfolders)")
  if args.cond and args.n_samples < len(data.names):
    raise UserError(f"--cond: --n-samples {args.n_samples} is fewer than the {len(data.names)} classes (one sample per class at least)")
  if args.batch > n: raise UserError(f"{data.source}: {n} training images, fewer than --batch {args.batch}")
  if args.latent > channels * args.size ** 2:
    raise UserError(f"--latent {args.latent} is larger than the {channels * args.size ** 2} numbers of an image: nothing to compress")


# ---- checkpoints: one file, every model under its prefix ----

PARTS = ("classifier", "ae", "ddpm")                     # what a checkpoint can hold, in this order
PREFIXES = {"classifier": ("classifier.",), "ae": ("ae.",), "ddpm": ("unet.", "ema.")}
META = {"classifier": ("channels", "size", "classes"), "ae": ("channels", "size", "latent"),
        "ddpm": ("channels", "size", "width", "cond", "schedule", "T")}
FLAG_OF = {"latent": "--latent", "width": "--width", "cond": "--cond", "schedule": "--schedule", "T": "--T", "size": "--size"}


def checkpoint_tag(parts) -> str: return "+".join(p for p in PARTS if p in parts)


def read_checkpoint(path: str, needed: set[str], run_meta: dict) -> dict:
  """The tensors of the parts this run needs, after checking the writer, the parts, the settings they
  were trained with, and every key and shape; any mismatch is one line."""
  from itertools import combinations
  from common.files import load_checkpoint
  tags = tuple(checkpoint_tag(c) for k in range(1, len(PARTS) + 1) for c in combinations(PARTS, k) if needed <= set(c))
  fields = sorted({f for p in needed for f in META[p]} | ({"classes"} if "ddpm" in needed and run_meta["cond"] else set()))
  tensors, meta = load_checkpoint(path, script=SCRIPT, model=tags, required_meta=tuple(fields))
  for field_name in fields:
    if meta[field_name] != run_meta[field_name]:
      hint = f" (give {FLAG_OF[field_name]} {meta[field_name]})" if field_name in FLAG_OF and field_name != "cond" else ""
      raise UserError(f"checkpoint {path} was trained with {field_name}={meta[field_name]}, this run has {field_name}={run_meta[field_name]}{hint}")
  return {k: v for k, v in tensors.items() if k.startswith(tuple(pre for p in needed for pre in PREFIXES[p]))}


def restore(loaded: dict, prefix: str, model, path: str) -> None:
  """Copy the checkpoint's tensors under `prefix` into `model`'s own (realized) buffers."""
  from common.files import check_state_matches
  state = get_state_dict(model)
  part = {k[len(prefix):]: v for k, v in loaded.items() if k.startswith(prefix)}
  check_state_matches(state, part, f"checkpoint {path} ({prefix.rstrip('.')})")
  # assigned while still lazy, a weight would alias the checkpoint's bytes, at offsets not aligned for the
  # vector loads of the compiled kernels
  realize_init(model)
  for k, v in state.items(): v.assign(part[k].cast(v.dtype)).realize()


# ---- the demo, one function per stage ----

@dataclass
class Run:
  out: Path
  rng: np.random.Generator
  targets: Targets
  load_path: str | None = None
  loaded: dict = field(default_factory=dict)         # checkpoint tensors by key; empty when training
  summary: dict = field(default_factory=dict)
  to_save: dict = field(default_factory=dict)
  step_times: list = field(default_factory=list)     # (case, seconds of each step, batch), for --json
  ok: bool = True

  def trained(self, name: str, losses: list[float], seconds: list[float], batch: int, **plot) -> None:
    self.step_times.append((f"{name} train step b={batch} (demo)", seconds, batch))
    self.summary[f"{name}_loss_drop"] = loss_drop(losses)
    plot_curves(self.out / f"{name}_loss.png", {plot.pop("label"): losses}, ylabel="loss", logy=True, **plot)


def judge_stage(run: Run, data: Data, cfg: JudgeConfig) -> tuple[Classifier, np.ndarray]:
  """Train (or load) the classifier that scores the DDPM's samples -> (it, its features of the held-out images)."""
  clf = Classifier(cfg.channels, cfg.size, cfg.n_classes)
  if run.loaded: restore(run.loaded, "classifier.", clf, run.load_path)
  else:
    losses, seconds = train_loop("classifier", make_classifier_step(clf, cfg.lr), data.x_train, data.y_train, cfg.steps, cfg.batch, run.rng)
    run.trained("classifier", losses, seconds, cfg.batch, label="cross-entropy", title="the judge: a classifier", smooth=20)
  probs, feats_real = classify(clf, data.x_test)
  acc = float((probs.argmax(1) == data.y_test).mean())
  run.summary["classifier_heldout_accuracy"] = acc
  print(f"classifier: held-out accuracy {acc * 100:.2f} % on {len(data.x_test)} images")
  run.ok &= check_judge(acc, run.targets)
  run.to_save.update({f"classifier.{k}": v for k, v in get_state_dict(clf).items()})
  return clf, feats_real


def autoencoder_stage(run: Run, data: Data, cfg: AEConfig) -> None:
  ae = Autoencoder(cfg.channels, cfg.size, cfg.latent)
  if run.loaded: restore(run.loaded, "ae.", ae, run.load_path)
  else:
    ae.start_at_mean(data.x_train.mean(axis=(0, 2, 3)))
    t0 = time.perf_counter()
    losses, seconds = train_loop("autoencoder", make_ae_step(ae, cfg.lr, cfg.half), data.x_train, None, cfg.steps, cfg.batch, run.rng)
    run.summary["ae_train_s"] = time.perf_counter() - t0
    run.trained("ae", losses, seconds, cfg.batch, label="train MSE", title=f"autoencoder, latent {cfg.latent}", smooth=20)
  recon = predict_in_batches(ae, data.x_test, 250)
  mse, baseline = float(((recon - data.x_test) ** 2).mean()), mean_image_mse(data.x_train, data.x_test)
  run.summary.update(ae_heldout_mse=mse, ae_mean_image_mse=baseline)
  print(f"autoencoder: held-out reconstruction MSE {mse:.5f} ({len(data.x_test)} images, latent {cfg.latent}); "
        f"the training set's mean image scores {baseline:.5f}")
  run.ok &= check_autoencoder(mse, baseline, run.targets)
  hwc = data.x_test.transpose(0, 2, 3, 1)
  save_image(image_grid(np.concatenate([hwc[:12], recon[:12].transpose(0, 2, 3, 1)]), nrow=min(12, len(hwc))), run.out / "ae_reconstructions.png")
  # latent interpolation: rows of decoded z = (1 - a) z_i + a z_j, between held-out images (of different classes for digits)
  pairs = [(i, i + 1) for i in range(0, min(10, len(hwc)) - 1, 2)]
  if pairs:
    z = ae.encode(Tensor(data.x_test[:12])).numpy()
    alphas = np.linspace(0, 1, 10, dtype=np.float32)[:, None]
    zs = np.concatenate([(1 - alphas) * z[i] + alphas * z[j] for i, j in pairs])
    save_image(image_grid(ae.decode(Tensor(zs)).numpy().transpose(0, 2, 3, 1), nrow=10), run.out / "ae_interpolation.png")
  run.to_save.update({f"ae.{k}": v for k, v in get_state_dict(ae).items()})


def train_diffusion(run: Run, data: Data, cfg: DDPMConfig, sched: Schedule) -> UNet:
  """Train (or load) the U-Net -> its EMA copy, the sampling network."""
  unet, ema = make_unets(cfg)
  n_params = sum(p.numel() for p in get_parameters(unet))
  print(f"U-Net: width {cfg.width}, {n_params / 1e6:.2f} M parameters, {cfg.schedule} β, T = {cfg.T}"
        + (", class-conditional" if cfg.n_classes else ""))
  if run.loaded:
    restore(run.loaded, "unet.", unet, run.load_path)
    restore(run.loaded, "ema.", ema, run.load_path)
  else:
    step = make_ddpm_step(unet, ema, sched, cfg.lr, cfg.p_uncond, cfg.half)
    t0 = time.perf_counter()
    losses, seconds = train_loop("DDPM", step, data.x_train * 2 - 1, np.maximum(data.y_train, 0), cfg.steps, cfg.batch, run.rng,
                                 extra=lambda i: (Tensor([ema_decay_at(i, cfg.ema)]),), max_seconds=cfg.max_seconds)
    run.summary.update(ddpm_steps_done=len(losses), ddpm_train_s=time.perf_counter() - t0)
    run.trained("ddpm", losses, seconds, cfg.batch, label="ε-prediction MSE", title="DDPM training", smooth=50)
    print(f"DDPM: {len(losses)} steps in {run.summary['ddpm_train_s']:.0f} s, loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-50:]):.4f}")
  run.to_save.update({f"unet.{k}": v for k, v in get_state_dict(unet).items()})
  run.to_save.update({f"ema.{k}": v for k, v in get_state_dict(ema).items()})
  return ema


def diffusion_stage(run: Run, data: Data, cfg: DDPMConfig, judge: tuple[Classifier, np.ndarray] | None) -> None:
  sched = Schedule(cfg.schedule, cfg.T)
  sampler = Sampler(train_diffusion(run, data, cfg, sched), sched, cfg.guidance)
  requested = np.arange(cfg.n_samples) % max(len(data.names), 1)
  t0 = time.perf_counter()
  samples, snaps = sampler.sample(requested, cfg.channels, cfg.size, "ddim", cfg.ddim_steps, keep=10, desc=f"DDIM {cfg.ddim_steps} steps")
  run.summary["ddim_sampling_s"] = time.perf_counter() - t0
  save_image(image_grid(samples[:100].transpose(0, 2, 3, 1), nrow=10), run.out / "ddpm_samples.png")
  if cfg.ancestral_samples:
    t0 = time.perf_counter()
    anc, snaps = sampler.sample(requested[:cfg.ancestral_samples], cfg.channels, cfg.size, "ancestral", keep=10, desc=f"ancestral {cfg.T} steps")
    run.summary["ancestral_sampling_s"] = time.perf_counter() - t0
    save_image(image_grid(anc.transpose(0, 2, 3, 1), nrow=min(8, len(anc))), run.out / "ddpm_samples_ancestral.png")
  # one sample from noise to image (ancestral when drawn, else DDIM)
  save_image(image_grid(np.stack(snaps).transpose(0, 2, 3, 1), nrow=len(snaps)), run.out / "ddpm_denoising.png")
  quality = judge_samples(judge, samples, requested if cfg.n_classes else None, data.names) if judge else None
  if quality is not None: run.summary["ddpm_quality"] = quality
  run.ok &= check_diffusion(quality, run.summary.get("ddpm_loss_drop"), bool(cfg.n_classes), run.targets)


def judge_samples(judge: tuple[Classifier, np.ndarray], samples: np.ndarray, requested: np.ndarray | None, names: tuple[str, ...]) -> dict:
  clf, feats_real = judge
  probs, feats = classify(clf, samples)
  q = sample_quality(probs, len(names), requested)
  q["frechet_distance"] = frechet_distance(feats_real, feats)
  # the same distance between two halves of the real held-out set: what "indistinguishable" scores
  half = len(feats_real) // 2
  q["frechet_distance_real_vs_real"] = frechet_distance(feats_real[:half], feats_real[half:])
  def fd(v: float | None) -> str: return "n/a (too few images)" if v is None else f"{v:.2f}"
  print(f"DDPM samples ({len(samples)}): {q['confident_fraction'] * 100:.1f} % confident (p >= 0.9), classes "
        + " ".join(f"{n}:{f * 100:.0f}%" for n, f in zip(names, q["class_fractions"]))
        + f", Fréchet distance {fd(q['frechet_distance'])} (real vs real {fd(q['frechet_distance_real_vs_real'])})")
  if requested is not None:
    print("per-class accuracy of conditional samples: " + " ".join(f"{n}:{a * 100:.0f}%" for n, a in zip(names, q["per_class_accuracy"])))
  return q


def write_step_times(run: Run, path: str) -> None:
  """--json in the demo: each training loop's step times as common.bench records (the first two steps,
  which compile and capture the JIT, as warm-up)."""
  from common.bench import Bench, Timing
  bench = Bench(PROJECT)
  for case, seconds, batch in run.step_times:
    n_warm = min(2, len(seconds) - 1)
    bench.add(case, Timing(seconds[:n_warm], seconds[n_warm:]), rate=(batch, "images/s"))
  bench.write_json(path)


def demo(args) -> int:
  check_out_dir(args)
  t_start = time.perf_counter()
  run = Run(Path(args.out), seed_all(args.seed), TARGETS["quick" if args.quick else "full" if args.full else "default"], args.load)
  data = load_data(args)
  check_data_fits(data, args)
  ae_cfg, ddpm_cfg, judge_cfg, meta = configs(args, data)
  needed = parts_needed(args.model, data.judged)
  print(f"data: {data.source}: {len(data.x_train)} train / {len(data.x_test)} held-out, {'x'.join(map(str, data.x_train.shape[1:]))}, "
        f"{len(data.names) or 'no'} classes")
  if args.load: run.loaded = read_checkpoint(args.load, needed, meta)
  if "ddpm" in needed and "classifier" not in needed: print("the judge needs labels of 2 or more classes: the DDPM is checked by its loss only")
  judge = judge_stage(run, data, judge_cfg) if "classifier" in needed else None
  if "ae" in needed: autoencoder_stage(run, data, ae_cfg)
  if "ddpm" in needed: diffusion_stage(run, data, ddpm_cfg, judge)
  run.summary.update(data=data.source, settings={"autoencoder": asdict(ae_cfg), "ddpm": asdict(ddpm_cfg), "judge": asdict(judge_cfg),
                     "targets": asdict(run.targets)}, wall_s=time.perf_counter() - t_start, passed=bool(run.ok))
  if args.save:
    save_checkpoint(run.to_save, args.save, metadata=meta, script=SCRIPT, model=checkpoint_tag(needed))
    print(f"saved {args.save} ({checkpoint_tag(needed)})")
  save_json(run.summary, run.out / "summary.json")
  if args.json: write_step_times(run, args.json)
  print(f"wrote {run.out}/ in {run.summary['wall_s']:.0f} s")
  return 0 if run.ok else 1


def parts_needed(model: str, judged: bool) -> set[str]:
  """The models this run uses: the judge goes with the DDPM when the data can be judged."""
  parts = {"ae"} if model in ("autoencoder", "all") else set()
  if model in ("diffusion", "all"): parts |= {"ddpm"} | ({"classifier"} if judged else set())
  return parts


def configs(args, data: Data) -> tuple[AEConfig, DDPMConfig, JudgeConfig, dict]:
  """The settings of each model for this data, and the checkpoint metadata that records them."""
  c, s, k = data.x_train.shape[1], data.x_train.shape[2], len(data.names)
  ae = AEConfig(c, s, args.latent, args.lr, args.ae_steps, args.batch, half=args.half)
  ddpm = DDPMConfig(c, s, args.width, k if args.cond else 0, args.T, args.schedule, args.ddpm_lr, args.ddpm_steps, args.batch, args.ema,
                    max_seconds=args.ddpm_minutes * 60 if args.ddpm_minutes else None, guidance=args.guidance, ddim_steps=args.ddim_steps,
                    n_samples=args.n_samples, ancestral_samples=args.ancestral_samples, half=args.half)
  judge = JudgeConfig(c, s, k, args.lr, args.clf_steps, args.batch)
  meta = dict(channels=c, size=s, latent=args.latent, width=args.width, classes=k, cond=bool(args.cond), schedule=args.schedule, T=args.T)
  return ae, ddpm, judge, meta


# ---- --bench ----

def timed(bench, case: str, fn, rate, jit, **iters) -> dict:
  """Time `fn`, then count one replay's kernels and FLOPs: many tiny kernels mean launch-bound,
  achieved GFLOP/s far below the device's peak with few kernels means the kernels themselves are slow."""
  from common.bench import jit_kernel_count
  from common.device import synchronize
  rec = bench.run(case, fn, rate=rate, **iters)
  GlobalCounters.reset()
  fn()
  synchronize()
  rec.update(kernels=jit_kernel_count(jit), gflop=GlobalCounters.global_ops / 1e9,
             achieved_gflops=GlobalCounters.global_ops / 1e9 / (rec["median_ms"] / 1e3))
  return rec


def bench_autoencoder(bench, cfg: AEConfig, batch_sizes: list[int], rng, iters: dict) -> None:
  """The autoencoder at the anchors table's shape, 3x32x32 (torch_reference.py times the same model)."""
  for b in batch_sizes:
    step = make_ae_step(Autoencoder(cfg.channels, cfg.size, cfg.latent), cfg.lr, cfg.half)
    x = Tensor(rng.random((b, cfg.channels, cfg.size, cfg.size), dtype=np.float32)).realize()
    case = f"AE train step b={b} {cfg.channels}x{cfg.size}x{cfg.size}" + (" fp16" if cfg.half else "")
    timed(bench, case, lambda: step(x), (b, "images/s"), step, **iters)


def bench_diffusion(bench, cfg: DDPMConfig, batch_sizes: list[int], rng, iters: dict, train: bool) -> None:
  c, s = cfg.channels, cfg.size
  sched = Schedule(cfg.schedule, cfg.T)
  for b in (batch_sizes if train else []):
    unet, ema = UNet(c, cfg.width, cfg.n_classes), UNet(c, cfg.width, cfg.n_classes)
    step = make_ddpm_step(unet, ema, sched, cfg.lr, cfg.p_uncond, cfg.half)
    x = Tensor(rng.uniform(-1, 1, (b, c, s, s)).astype(np.float32)).realize()
    y = Tensor(rng.integers(0, 10, b).astype(np.int32)).realize()
    decay = Tensor([0.999]).realize()
    case = f"DDPM train step b={b} {c}x{s}x{s} width {cfg.width}" + (" fp16" if cfg.half else "")
    timed(bench, case, lambda: step(x, y, decay), (b, "images/s"), step, **iters)
  nb = batch_sizes[-1]
  unet = UNet(c, cfg.width, cfg.n_classes)
  realize_init(unet)
  fwd = TinyJit(lambda x, t: unet(x, t).realize())
  x = Tensor(rng.standard_normal((nb, c, s, s)).astype(np.float32)).realize()
  t = Tensor(rng.integers(0, cfg.T, nb).astype(np.int32)).realize()
  timed(bench, f"U-Net forward b={nb}", lambda: fwd(x, t), (nb, "images/s"), fwd, **iters)
  sampler = Sampler(unet, sched, cfg.guidance)
  y = Tensor(rng.integers(0, 10, nb).astype(np.int32)).realize()
  mid = cfg.T // 2
  for method, n_steps, fn, coefs in (("ancestral", cfg.T, sampler.ancestral_step, sampler.ancestral_coefs(mid)),
                                     ("DDIM", cfg.ddim_steps, sampler.ddim_step, sampler.ddim_coefs(mid, max(mid - cfg.T // cfg.ddim_steps, 0)))):
    rec = timed(bench, f"{method} step b={nb}", lambda: fn(x, y, coefs), (nb / n_steps, "images/s"), fn, **iters)
    rec.update(per_image_ms=rec["median_ms"] / nb, full_sample_s=rec["median_ms"] * n_steps / 1e3, sampling_steps=n_steps)


def run_bench(args) -> int:
  from common.bench import Bench
  bench = Bench(PROJECT)
  seed_all(args.seed)
  rng = np.random.default_rng(args.seed)
  # --batch B: that size only; --quick: its batch, 16, the demo's, whose sampling kernels the program cache may hold
  batch_sizes = [args.batch] if "batch" in args.given or args.quick else [32, 128]
  iters = dict(warmup=3, iters=5 if args.quick else 20, max_seconds=5 if args.quick else 30)
  if args.model in ("autoencoder", "all"): bench_autoencoder(bench, AEConfig(3, 32, args.latent, args.lr, half=args.half), batch_sizes, rng, iters)
  if args.model in ("diffusion", "all"):
    cfg = DDPMConfig(3 if args.dataset == "shapes" else 1, args.size, args.width, 10 if args.cond else 0, args.T, args.schedule, args.lr,
                     guidance=args.guidance, ddim_steps=args.ddim_steps, half=args.half)
    # --quick (the tests' setting) leaves the DDPM train step out: building and compiling its ~300 distinct
    # forward + backward kernels takes over a minute on a 2-core CPU
    bench_diffusion(bench, cfg, batch_sizes, rng, iters, train=not args.quick)
  bench.print(f"{PROJECT}: AE / DDPM train steps, U-Net forward, sampling (images/s of sampling = whole trajectories)")
  print("\n| case | kernels per call | GFLOP per call | achieved GFLOP/s |\n|---|---:|---:|---:|")
  for r in bench.records: print(f"| {r['case']} | {r['kernels']} | {r['gflop']:.3g} | {r['achieved_gflops']:.3g} |")
  bench.write_json(args.json)
  return 0


# ---- the command line ----

MODELS = {"autoencoder": "autoencoder", "ae": "autoencoder", "diffusion": "diffusion", "ddpm": "diffusion", "all": "all"}
QUICK = dict(n_train=600, n_test=200, clf_steps=60, ae_steps=100, lr=3e-3, ddpm_steps=50, width=8, n_samples=16, ddim_steps=10,
             ema=0.99, ancestral_samples=0, ddpm_lr=2e-3, batch=16)
FULL = dict(n_train=30000, n_test=2000, clf_steps=1500, ae_steps=3000, ddpm_steps=20000, width=64, n_samples=1000, ddim_steps=50,
            ema=0.999, ancestral_samples=16, ddpm_lr=5e-4, batch=128, ddpm_minutes=5.0, schedule="cosine")


def int_in(lo: int, hi: int):
  """An integer flag in [lo, hi] (an argparse type)."""
  import argparse
  def parse(text: str) -> int:
    v = positive_int(text) if lo > 0 else nonnegative_int(text)
    if not lo <= v <= hi: raise argparse.ArgumentTypeError(f"{v} must be between {lo} and {hi}")
    return v
  parse.__name__ = f"integer in [{lo}, {hi}]"
  return parse


def build_parser():
  p = project_parser(PROJECT, MODULE_DOC, quick_help="for tests: tiny data and models, seconds",
                     full_help="the quality setting for a GPU", save_help="every model trained in this run (.safetensors)",
                     load_help="a file written by --save: evaluate its models instead of training")
  p.add_argument("--model", choices=tuple(MODELS), default="all", help="which generative models: autoencoder (ae), diffusion (ddpm) or all")
  p.add_argument("--train", action="store_true", help="train, then evaluate (what runs without --bench or --load)")
  p.add_argument("--steps", type=int_in(1, 10_000_000), default=None,
                 help="training steps of each model --model picks (sets --ae-steps / --ddpm-steps)")
  p.add_argument("--dataset", choices=("digits", "shapes"), default="digits", help="synthetic data when --data is not given")
  p.add_argument("--data", metavar="PATH", default=None, help="MNIST idx file/folder or a folder of images (class subfolders = labels)")
  p.add_argument("--size", type=int, choices=(28, 32), default=28, help="image side in pixels")
  p.add_argument("--n-train", type=int_in(1, 200_000), default=6000, help="synthetic training images")
  p.add_argument("--n-test", type=int_in(1, 50_000), default=1000, help="synthetic held-out images")
  p.add_argument("--batch", type=int_in(1, 4096), default=32, help="training batch size")
  p.add_argument("--ddpm-minutes", type=positive_float, default=None,
                 help="stop DDPM training after this many minutes even if --ddpm-steps are not done")
  p.add_argument("--lr", type=float_range(1e-7, 1.0), default=1e-3, help="Adam learning rate (AE and classifier; DDPM uses --ddpm-lr)")
  p.add_argument("--ddpm-lr", type=float_range(1e-7, 1.0), default=1e-3, help="Adam learning rate of the U-Net")
  p.add_argument("--latent", type=int_in(1, 4096), default=32, help="autoencoder latent size L")
  p.add_argument("--clf-steps", type=int_in(1, 10_000_000), default=400, help="classifier (judge) training steps")
  p.add_argument("--ae-steps", type=int_in(1, 10_000_000), default=1500, help="autoencoder training steps")
  p.add_argument("--ddpm-steps", type=int_in(1, 10_000_000), default=800, help="U-Net training steps")
  p.add_argument("--width", type=int_in(4, 512), default=16, help="U-Net base channels C (widths C, 2C, 2C; a multiple of 4)")
  p.add_argument("--T", type=int_in(50, 10_000), default=1000, help="diffusion steps (linear β reaches 20/T, so T >= 50)")
  p.add_argument("--schedule", choices=("linear", "cosine"), default="linear", help="β schedule")
  p.add_argument("--ema", type=probability, default=0.995, help="EMA decay of the sampling weights")
  p.add_argument("--ddim-steps", type=int_in(1, 10_000), default=50, help="DDIM sampling steps (at most --T)")
  p.add_argument("--n-samples", type=int_in(2, 10_000), default=100, help="DDIM samples scored by the classifier")
  p.add_argument("--ancestral-samples", type=int_in(0, 1000), default=4, help="images drawn with the T-step ancestral sampler (0: skip)")
  p.add_argument("--cond", action="store_true", help="class-conditional U-Net with classifier-free guidance")
  p.add_argument("--half", action="store_true",
                 help="mixed precision: the AE's and U-Net's convolutions in fp16, weights in fp32, dynamic loss scaling (common/mixed.py)")
  p.add_argument("--guidance", type=nonnegative_float, default=2.0, help="guidance scale w with --cond (1 = plain conditional)")
  p.preset("quick", **QUICK)
  p.preset("full", **FULL)
  return p


def parse_args(argv=None):
  p = build_parser()
  args = p.parse_args(argv)
  args.model = MODELS[args.model]
  given = args.given
  synthetic_only, cond_only = given & {"n_train", "n_test", "dataset"}, given & {"cond", "guidance"}
  for why, bad in (("--quick and --full exclude each other", args.quick and args.full),
                   ("--train and --bench exclude each other", args.train and args.bench),
                   ("--bench times fresh models: it has nothing to --save and loads nothing", args.bench and (args.save or args.load)),
                   ("--bench times single steps: --steps and --train do not apply", args.bench and "steps" in given),
                   ("--load evaluates its models instead of training: --train/--steps do not apply", args.load and (args.train or "steps" in given)),
                   ("--load trains nothing: there is nothing new to --save (copy the file instead)", args.load and args.save),
                   ("--json with --load: nothing is trained, so no step times (use --bench --json)", args.load and args.json and not args.bench),
                   (f"--width {args.width} must be a multiple of 4 (GroupNorm groups)", args.width % 4),
                   (f"--ddim-steps {args.ddim_steps} is more than the {args.T} diffusion steps (--T)", args.ddim_steps > args.T),
                   ("--n-train/--n-test/--dataset choose the synthetic data; they do not apply to --data", args.data and synthetic_only),
                   ("--cond and --guidance condition the DDPM, which --model autoencoder does not train", args.model == "autoencoder" and cond_only),
                   ("--guidance applies with --cond only", "guidance" in given and not args.cond),
                   (f"--seed {args.seed} must be between 0 and 2**32 - 1", not 0 <= args.seed < 2 ** 32)):
    if bad: p.error(why)
  if "steps" in given:
    for dest, model in (("ae_steps", "autoencoder"), ("ddpm_steps", "diffusion")):
      if args.model not in (model, "all"): continue
      if dest in given: p.error(f"--steps and --{dest.replace('_', '-')} both set the {model}'s steps: give one")
      setattr(args, dest, args.steps)
  if not args.data and args.batch > args.n_train: p.error(f"--batch {args.batch} is larger than the {args.n_train} training images")
  return args
