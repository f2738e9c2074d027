"""generative/generative_models.py: the diffusion math against closed forms, the networks' shapes and
conditioning, the samplers against an oracle, the success checks against collapsed models, the data
loaders, checkpoints and flags with their bad inputs, and the documented commands end to end
(tinygrad's CPU device)."""
import gzip, json, math, os, struct, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "generative" / "generative_models.py"
sys.path.insert(0, str(ROOT / "generative"))
os.environ.setdefault("DEV", "CPU")

import common  # noqa: E402  (before tinygrad)
from tinygrad import Tensor  # noqa: E402
from tinygrad.helpers import Context  # noqa: E402
from tinygrad.nn.state import get_state_dict  # noqa: E402
import generative_models as gm  # noqa: E402
from conftest import bad_input  # noqa: E402


@pytest.fixture(autouse=True)
def compile_in_process():
  with Context(PARALLEL=0): yield   # the in-process tests too (see run_script)


# Most of these tests' time is tinygrad turning kernels into C (~0.25 s of Python per distinct kernel;
# clang's output is cached on disk, this step is not). PARALLEL=0 does it in the process itself: on two
# cores tinygrad's default pool of compile workers (restarted every 16 kernels, each with cold caches,
# one worker per core, one core per pytest-xdist worker) measured 1.5x slower than no pool at all.
def run_script(*args, timeout=1800):   # generous: compiling is slow on a loaded 2-core machine
  env = {**os.environ, "DEV": "CPU", "PYTHONPATH": str(ROOT), "PARALLEL": "0"}
  return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# ---- the schedule: closed forms ------------------------------------------------------------------

def test_linear_alpha_bar_is_the_product_of_one_minus_beta():
  s = gm.Schedule("linear", 1000)
  t = np.arange(1, 1001)
  beta = 1e-4 + (t - 1) * (0.02 - 1e-4) / 999                       # Ho et al.'s linear schedule
  np.testing.assert_allclose(s.beta, beta, rtol=1e-12)
  np.testing.assert_allclose(s.alpha_bar, np.exp(np.cumsum(np.log1p(-beta))), rtol=1e-10)
  assert s.alpha_bar[-1] < 1e-4                                      # x_T is (almost) pure noise


def test_cosine_alpha_bar_follows_its_defining_curve():
  s = gm.Schedule("cosine", 1000)
  def f(t): return np.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
  t = np.arange(1, 1001)
  unclipped = s.beta < 0.999
  assert unclipped[:990].all()                                       # the 0.999 cap only bites at the very end
  np.testing.assert_allclose(s.alpha_bar[:990], (f(t) / f(0))[:990], rtol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_is_bayes_of_two_gaussians(kind):
  # q(x_{t-1}|x_0) = N(sqrt(ab_{t-1}) x0, 1-ab_{t-1}) times q(x_t|x_{t-1}) = N(sqrt(a_t) x_{t-1}, b_t):
  # precision 1/(1-ab_{t-1}) + a_t/b_t, mean = var * (sqrt(ab_{t-1}) x0/(1-ab_{t-1}) + sqrt(a_t) x_t / b_t)
  s = gm.Schedule(kind, 1000)
  i = np.arange(1, 1000)                                             # t >= 2 (ab_{t-1} < 1)
  ab_prev, a, b = s.alpha_bar[i - 1], s.alpha[i], s.beta[i]
  var = 1 / (1 / (1 - ab_prev) + a / b)
  np.testing.assert_allclose(s.posterior_var[i], var, rtol=1e-9)
  np.testing.assert_allclose(s.coef_x0[i], var * np.sqrt(ab_prev) / (1 - ab_prev), rtol=1e-9)
  np.testing.assert_allclose(s.coef_xt[i], var * np.sqrt(a) / b, rtol=1e-9)
  # and the ε form of the mean: mu = (x_t - b/sqrt(1-ab) eps)/sqrt(a) with x0 = (x_t - sqrt(1-ab) eps)/sqrt(ab)
  rng = np.random.default_rng(0)
  xt, eps = rng.standard_normal(len(i)), rng.standard_normal(len(i))
  ab = s.alpha_bar[i]
  x0 = (xt - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
  np.testing.assert_allclose(s.coef_x0[i] * x0 + s.coef_xt[i] * xt, (xt - b / np.sqrt(1 - ab) * eps) / np.sqrt(a), rtol=1e-6, atol=1e-9)


def test_q_sample_has_the_closed_form_moments():
  s = gm.Schedule("linear", 1000)
  n, x0_value = 20000, 0.7
  for t in (0, 250, 999):
    x0 = Tensor.full((n, 1), x0_value)
    xt = s.q_sample(x0, Tensor.full((n,), t, dtype="int32"), Tensor.randn(n, 1)).numpy()
    mean, var = math.sqrt(s.alpha_bar[t]) * x0_value, 1 - s.alpha_bar[t]
    assert abs(xt.mean() - mean) < 4 * math.sqrt(var / n) + 1e-6
    assert abs(xt.var() - var) < 0.05 * var + 1e-6


def test_timestep_embedding_matches_the_formula():
  t = np.array([0, 1, 17, 999])
  got = gm.timestep_embedding(Tensor(t.astype(np.int32)), 16).numpy()
  w = 10000.0 ** (-np.arange(8) / 8)
  np.testing.assert_allclose(got, np.concatenate([np.sin(t[:, None] * w), np.cos(t[:, None] * w)], 1), atol=2e-4)


# ---- the networks ---------------------------------------------------------------------------------

def _randomize_output_layer(unet):
  # conv_out starts at zero (ε̂ = 0 whatever the input); give it weights so conditioning shows
  unet.conv_out.weight = Tensor.randn(*unet.conv_out.weight.shape) * 0.1


def test_unet_shape_time_and_class_conditioning():
  # one conditional U-Net, one forward of three copies of the same image: (t, y) = (10, 3), (900, 3), (10, 7).
  # Each row's output is its own (no op mixes the batch), and one forward compiles the model once
  Tensor.manual_seed(0)
  unet = gm.UNet(3, 8, n_classes=10)
  _randomize_output_layer(unet)
  x = Tensor.randn(1, 3, 32, 32).expand(3, 3, 32, 32).contiguous()
  a, b, c = unet(x, Tensor([10, 900, 10]), Tensor([3, 3, 7])).numpy()
  assert a.shape == (3, 32, 32)
  assert np.abs(a - b).mean() > 1e-3, "the output ignores t"
  assert np.abs(a - c).mean() > 1e-4, "the output ignores the class"


def test_autoencoder_shapes():
  ae = gm.Autoencoder(3, 32, 16)
  x = Tensor.rand(4, 3, 32, 32)
  z = ae.encode(x)
  assert z.shape == (4, 16)
  y = ae.decode(z).numpy()
  assert y.shape == (4, 3, 32, 32)


class OracleEps:
  """The exact ε-predictor for data that is a single image x*: ε = (x_t - sqrt(ab_t) x*)/sqrt(1 - ab_t)."""
  n_classes = 0
  def __init__(self, sched, target):
    self.sched, self.target = sched, Tensor(target)
  def __call__(self, x, t, y=None):
    return (x - self.sched.sqrt_ab[t].reshape(-1, 1, 1, 1) * self.target) / self.sched.sqrt_1m_ab[t].reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("method", ["ddim", "ancestral"])
def test_samplers_reach_the_data_with_an_exact_noise_predictor(method):
  sched = gm.Schedule("linear", 100)
  target = np.linspace(-0.8, 0.8, 16, dtype=np.float32).reshape(1, 1, 4, 4)
  sampler = gm.Sampler(OracleEps(sched, target), sched, guidance=1.0)
  out, snaps = sampler.sample(np.zeros(3, np.int64), 1, 4, method, ddim_steps=10, keep=4)
  np.testing.assert_allclose(out, np.broadcast_to((target + 1) / 2, out.shape), atol=1e-3)
  assert len(snaps) == 4 and np.abs(snaps[0] - (target[0] + 1) / 2).mean() > 0.05   # it started as noise


def test_ddim_step_stays_on_the_noising_path_of_the_clipped_x0():
  # Guidance extrapolates ε, so x̂_0 overshoots [-1, 1] and is clipped. A DDIM step from
  # x_t = sqrt(ab_t) x* + sqrt(1-ab_t) z must land on sqrt(ab_t') x* + sqrt(1-ab_t') z, x* the clipped x̂_0.
  # With the raw ε it landed 2 sqrt(ab_t/(1-ab_t)) x* away in the noise term: conditional samples flipped class.
  sched = gm.Schedule("linear", 100)
  target = np.where(np.arange(16) % 3 == 0, 1.0, -1.0).astype(np.float32).reshape(1, 1, 4, 4)
  sampler = gm.Sampler(OracleEps(sched, 3 * target), sched, guidance=1.0)   # x̂_0 = 3 x*, clipped to x*
  z = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
  ab, i, j = sched.alpha_bar, 60, 40
  x_i = (math.sqrt(ab[i]) * target + math.sqrt(1 - ab[i]) * z).astype(np.float32)
  x_j = sampler.ddim_step(Tensor(x_i), Tensor(np.zeros(2, np.int32)), sampler.ddim_coefs(i, j)).numpy()
  np.testing.assert_allclose(x_j, math.sqrt(ab[j]) * target + math.sqrt(1 - ab[j]) * z, atol=1e-4)


def test_frechet_distance_identities():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6))
  a -= a.mean(0)
  assert abs(gm.frechet_distance(a, a)) < 1e-6
  shift = rng.standard_normal(6)
  assert gm.frechet_distance(a, a + shift) == pytest.approx((shift ** 2).sum(), rel=1e-6)
  # centred a and 2a: Tr(S + 4S - 2 (4 S^2)^(1/2)) = Tr(S)
  assert gm.frechet_distance(a, 2 * a) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-6)
  # 1-d closed form for Gaussians: (mu1 - mu2)^2 + (s1 - s2)^2
  b, c = rng.normal(1.0, 2.0, (200000, 1)), rng.normal(-0.5, 0.5, (200000, 1))
  assert gm.frechet_distance(b, c) == pytest.approx(1.5 ** 2 + 1.5 ** 2, rel=0.02)


def test_sample_quality_counts():
  probs = np.array([[0.95, 0.05], [0.2, 0.8], [0.05, 0.95], [0.6, 0.4]])
  q = gm.sample_quality(probs, 2, requested=np.array([0, 1, 1, 1]))
  assert q["confident_fraction"] == 0.5
  assert q["class_fractions"] == [0.5, 0.5]
  assert q["per_class_accuracy"] == [1.0, pytest.approx(2 / 3)]


def test_frechet_distance_is_none_where_it_is_undefined():
  # a one-class folder held out a single image: its covariance was NaN and eigh raised LinAlgError after training
  rng = np.random.default_rng(0)
  a = rng.standard_normal((50, 8))
  assert gm.frechet_distance(a[:1], a) is None and gm.frechet_distance(a, a[:0]) is None
  b = a.copy()
  b[3, 2] = np.nan
  assert gm.frechet_distance(a, b) is None
  assert gm.frechet_distance(a[:2], a[2:4]) is not None


# ---- the success checks fail for collapsed models ---------------------------------------------------

def test_mean_image_baseline_and_a_black_autoencoder_fails(capsys):
  rng = np.random.default_rng(0)
  x_train, x_test = rng.random((40, 1, 6, 6)).astype(np.float32) ** 4, rng.random((10, 1, 6, 6)).astype(np.float32) ** 4
  base = gm.mean_image_mse(x_train, x_test)
  assert base == pytest.approx(float(((x_test - x_train.mean(0)) ** 2).mean()), rel=1e-6)
  black = float((x_test ** 2).mean())                       # what the old --quick autoencoder scored, and passed
  for setting in ("quick", "default", "full"):
    assert not gm.check_autoencoder(black, base, gm.TARGETS[setting])
    assert not gm.check_autoencoder(base, base, gm.TARGETS[setting])     # outputting the mean image fails too
  assert gm.check_autoencoder(0.1 * base, base, gm.TARGETS["quick"])
  assert "FAIL: autoencoder held-out MSE / mean image's MSE" in capsys.readouterr().out


def test_diffusion_checks_need_more_than_a_falling_loss():
  full, default = gm.TARGETS["full"], gm.TARGETS["default"]
  collapsed = {"confident_fraction": 0.2, "class_fractions": [1.0] + [0.0] * 9}    # every sample one blob
  assert not gm.check_diffusion(collapsed, 10.0, False, full)
  one_class = {"confident_fraction": 0.95, "class_fractions": [0.91] + [0.01] * 9}  # confident, but one digit
  assert not gm.check_diffusion(one_class, 10.0, False, full)
  good = {"confident_fraction": 0.95, "class_fractions": [0.1] * 10}
  assert gm.check_diffusion(good, 10.0, False, full)
  assert not gm.check_diffusion({**good, "confident_fraction": 0.90}, 10.0, False, full)          # the bar is 92 %
  assert not gm.check_diffusion({**good, "class_fractions": [0.135] + [0.865 / 9] * 9}, 10.0, False, full)   # 7-13 %
  assert not gm.check_diffusion({**good, "per_class_accuracy": [1.0] * 9 + [0.97]}, 10.0, True, full)  # worst >= 98 %
  for bad in (collapsed, {**one_class, "class_fractions": [0.5, 0.5] + [0.0] * 8}):       # the default setting too
    assert not gm.check_diffusion(bad, 10.0, False, default)
  measured = {"confident_fraction": 0.62, "class_fractions": [.11, .09, .06, .18, .07, .03, .04, .10, .16, .16]}   # the default run's
  assert gm.check_diffusion(measured, 12.8, False, default)
  assert not gm.check_diffusion(good, 1.5, False, default)                           # and the loss must fall
  ignores_class = {**good, "per_class_accuracy": [1.0] + [0.0] * 9}                  # --cond that ignores the class
  assert not gm.check_diffusion(ignores_class, 10.0, True, default) and not gm.check_diffusion(ignores_class, 10.0, True, full)
  assert gm.check_diffusion({**good, "per_class_accuracy": [0.3] * 10}, 10.0, True, default)


def test_loss_drop_compares_the_start_of_a_long_run_with_its_end():
  # a long run is converged long before its first 5 %: the first window stops at 50 steps
  losses = [1.0] * 50 + [0.05] * 5950
  assert gm.loss_drop(losses) == pytest.approx(20.0)     # over its first 300 steps it would score 4.2
  assert gm.loss_drop([1.0, 0.5] * 10) == pytest.approx(1.0 / 0.75)     # a short run: its first step over its last two


def test_a_diverging_loss_stops_with_one_line():
  with pytest.raises(gm.UserError, match="loss became nan at step 1; lower the learning rate"):
    gm.train_loop("x", lambda x: Tensor([float("nan")]), np.zeros((4, 1), np.float32), None, 3, 2, np.random.default_rng(0))


# ---- the flags: aliases, --train --steps, presets that change defaults only, configs ---------------

def test_model_names_and_aliases():
  for name, meant in (("autoencoder", "autoencoder"), ("ae", "autoencoder"), ("diffusion", "diffusion"), ("ddpm", "diffusion"), ("all", "all")):
    assert gm.parse_args(["--model", name]).model == meant


def test_train_steps_sets_the_steps_of_the_chosen_model():
  a = gm.parse_args(["--model", "autoencoder", "--train", "--steps", "100"])
  assert (a.ae_steps, a.ddpm_steps, a.clf_steps) == (100, 800, 400)
  a = gm.parse_args(["--model", "diffusion", "--train", "--steps", "7", "--quick"])
  assert (a.ddpm_steps, a.ae_steps) == (7, gm.QUICK["ae_steps"])
  assert gm.parse_args(["--steps", "9"]).ae_steps == gm.parse_args(["--steps", "9"]).ddpm_steps == 9


def test_quick_and_full_never_override_a_typed_flag():
  a = gm.parse_args(["--quick", "--width", "16", "--batch", "8", "--ema", "0.9"])
  assert (a.width, a.batch, a.ema, a.n_train) == (16, 8, 0.9, gm.QUICK["n_train"])
  a = gm.parse_args(["--full", "--schedule", "linear", "--ddpm-minutes", "1"])
  assert (a.schedule, a.ddpm_minutes, a.width) == ("linear", 1.0, 64)


def test_models_get_config_dataclasses_not_the_namespace():
  args = gm.parse_args(["--quick", "--width", "12", "--latent", "8", "--cond"])
  data = gm.Data(np.zeros((20, 3, 32, 32), np.float32), np.arange(20) % 5, np.zeros((5, 3, 32, 32), np.float32), np.arange(5), tuple("abcde"), "t")
  ae, ddpm, judge, meta = gm.configs(args, data)
  assert (ae.channels, ae.size, ae.latent, ae.steps) == (3, 32, 8, gm.QUICK["ae_steps"])
  assert (ddpm.width, ddpm.n_classes, ddpm.ddim_steps, ddpm.channels) == (12, 5, gm.QUICK["ddim_steps"], 3)
  assert (judge.n_classes, meta["classes"], meta["cond"]) == (5, 5, True)


# ---- data loaders (common.datasets underneath) ------------------------------------------------------

def write_idx(path: Path, array: np.ndarray, gz=False):
  raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
  path.write_bytes(gzip.compress(raw) if gz else raw)


def test_mnist_folder_loader(tmp_path):
  rng = np.random.default_rng(0)
  write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)), gz=True)
  write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(30) % 10, gz=True)
  write_idx(tmp_path / "t10k-images-idx3-ubyte", np.full((8, 28, 28), 255))
  write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(8) % 10)
  d = gm.load_idx(tmp_path, 32)
  assert d.x_train.shape == (30, 1, 32, 32) and d.x_test.shape == (8, 1, 32, 32)
  assert d.judged and len(d.names) == 10 and d.x_train.max() <= 1.0 and d.x_test.min() == pytest.approx(1.0)


def test_image_folder_loader_reads_floats_in_0_1(tmp_path):
  from PIL import Image
  for cls in ("cats", "dogs"):
    (tmp_path / cls).mkdir()
    for i in range(5):
      Image.fromarray(np.full((40, 30, 3), (200, 30 * i, 0), np.uint8)).save(tmp_path / cls / f"{i}.png")
  Image.fromarray(np.full((28, 28), 65535, np.uint16)).save(tmp_path / "dogs" / "sixteen.png")    # 16-bit: white, not 257x too bright
  d = gm.load_image_folder(tmp_path, 28, seed=0)
  assert d.names == ("cats", "dogs") and d.x_train.shape[1:] == (3, 28, 28) and d.judged
  x = np.concatenate([d.x_train, d.x_test])
  assert len(x) == 11 and x.max() == pytest.approx(1.0) and np.isclose(x[:, 0, 0, 0], 200 / 255, atol=0.01).sum() == 10


def test_a_one_class_folder_cannot_be_judged(tmp_path):
  from PIL import Image
  (tmp_path / "only").mkdir()
  for i in range(4): Image.fromarray(np.full((28, 28), 60 * i, np.uint8)).save(tmp_path / "only" / f"{i}.png")
  d = gm.load_image_folder(tmp_path, 28, seed=0)
  assert d.names == ("only",) and not d.judged and gm.parts_needed("all", d.judged) == {"ae", "ddpm"}


# ---- bad input: one line, exit 2, before any training --------------------------------------------

def refused(capsys, argv, *fragments):
  """In-process main(): exit status 2 and one line naming the problem (the subprocess tests below check
  the same through the real command line)."""
  try: code = common.run_main(lambda: gm.main([str(a) for a in argv]))
  except SystemExit as e: code = e.code
  captured = capsys.readouterr()
  lines = [ln for ln in captured.err.splitlines() if ln.strip() and not ln.startswith("warning:")]
  assert code == 2 and len(lines) == 1, (code, captured.err[-2000:], captured.out[-1000:])
  for f in fragments: assert f in lines[0], (f, lines[0])
  assert "data:" not in captured.out, "refused only after loading the data"


@pytest.mark.parametrize("argv, fragment", [
  (["--lr", "nan"], "not a finite number"), (["--lr", "inf"], "not a finite number"), (["--ddpm-lr", "-1"], "between"),
  (["--guidance", "inf", "--cond"], "not a finite number"), (["--ema", "nan"], "not a finite number"), (["--ema", "1.5"], "between 0 and 1"),
  (["--ddpm-minutes", "inf"], "not a finite number"), (["--ddpm-minutes", "0"], "must be > 0"),
  (["--width", "10"], "multiple of 4"), (["--width", "100000"], "between 4 and 512"), (["--T", "10"], "between 50"),
  (["--ddim-steps", "2000"], "more than the 1000 diffusion steps"), (["--batch", "0"], "--batch"),
  (["--quick", "--batch", "1000"], "larger than the 600 training images"), (["--n-train", "1e9"], "not an integer"),
  (["--n-samples", "1"], "between 2"), (["--ancestral-samples", "-1"], "must be >= 0"), (["--latent", "100000"], "between 1 and 4096"),
  (["--quick", "--full"], "exclude each other"), (["--train", "--bench"], "exclude each other"),
  (["--bench", "--steps", "5"], "--steps and --train do not apply"), (["--steps", "5", "--ae-steps", "6"], "both set the autoencoder's steps"),
  (["--model", "autoencoder", "--cond"], "--model autoencoder does not train"), (["--guidance", "3"], "with --cond only"),
  (["--seed", "-1"], "--seed"), (["--model", "gan"], "invalid choice"), (["--size", "30"], "invalid choice"),
  (["--json", "/proc/gen.json"], "cannot be written"), (["--save", "/sys/gen.safetensors"], "cannot be written"),
  (["--json", "/dev/null"], "not a regular file"), (["--out", "/proc/generative"], "cannot be written"),
])
def test_bad_flags(capsys, argv, fragment):
  refused(capsys, argv, fragment)


def test_save_json_and_load_in_every_mode(tmp_path, capsys):
  ckpt = tmp_path / "m.safetensors"
  ckpt.write_bytes(b"x")
  refused(capsys, ["--bench", "--save", tmp_path / "s.safetensors"], "nothing to --save")
  refused(capsys, ["--bench", "--load", ckpt], "loads nothing")
  refused(capsys, ["--load", ckpt, "--save", tmp_path / "s.safetensors"], "nothing new to --save")
  refused(capsys, ["--load", ckpt, "--json", tmp_path / "t.json"], "no step times")
  refused(capsys, ["--load", ckpt, "--train"], "--train/--steps do not apply")
  refused(capsys, ["--save", tmp_path], "is a folder")
  (tmp_path / "file").write_text("x")
  refused(capsys, ["--out", tmp_path / "file"], "not a folder")


def make_folder(root: Path, classes: dict[str, int], size=(28, 28)) -> Path:
  from PIL import Image
  for name, n in classes.items():
    (root / name).mkdir(parents=True)
    for i in range(n): Image.fromarray(np.full(size, 20 * i % 256, np.uint8)).save(root / name / f"{i}.png")
  return root


def png_claiming(path: Path, width: int, height: int) -> None:
  import zlib
  def chunk(kind, data): return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b""))


def test_bad_data_is_refused_before_training(tmp_path, capsys):
  bad_magic = tmp_path / "bad-images-idx3-ubyte"
  bad_magic.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 20)
  mism, trunc, t10k, empty = (tmp_path / n for n in ("mism", "trunc", "t10k", "empty"))
  for d in (mism, trunc, t10k, empty): d.mkdir()
  write_idx(mism / "train-images-idx3-ubyte", np.zeros((10, 28, 28)))
  write_idx(mism / "train-labels-idx1-ubyte", np.zeros(9))
  write_idx(trunc / "train-images-idx3-ubyte", np.zeros((10, 28, 28)))
  (trunc / "train-images-idx3-ubyte").write_bytes((trunc / "train-images-idx3-ubyte").read_bytes()[:-50])
  write_idx(trunc / "train-labels-idx1-ubyte", np.zeros(10))
  write_idx(t10k / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)))      # the old loader: AttributeError
  write_idx(t10k / "t10k-labels-idx1-ubyte", np.zeros(10))
  bomb = make_folder(tmp_path / "bomb", {"a": 2, "b": 2})
  png_claiming(bomb / "a" / "huge.png", 60000, 60000)
  broken = make_folder(tmp_path / "broken", {"a": 2, "b": 2})
  (broken / "b" / "x.png").write_bytes(b"not a png")
  out = tmp_path / "o"
  for argv, fragment in [
    (["--data", tmp_path / "nope"], "no such folder"), (["--data", bad_magic], "not an MNIST idx file"), (["--data", mism], "10 images but"),
    (["--data", trunc], "header says"), (["--data", empty], "no files of type"), (["--data", t10k], "no train-images-idx3-ubyte"),
    (["--data", bomb], "over the 100 MP limit"), (["--data", broken], "cannot be read as an image"),
    (["--data", make_folder(tmp_path / "one", {"a": 1, "b": 3})], "has only one item"),
    (["--data", make_folder(tmp_path / "cls1", {"only": 12}), "--cond", "--quick"], "--cond needs labels of at least 2 classes"),   # was LinAlgError
    (["--data", make_folder(tmp_path / "small", {"a": 6, "b": 6}), "--batch", "32"], "fewer than --batch 32"),
    (["--cond", "--quick", "--n-samples", "5"], "fewer than the 10 classes"), (["--quick", "--latent", "1000"], "nothing to compress"),
  ]:
    try: code = common.run_main(lambda: gm.main([str(a) for a in argv] + ["--out", str(out)]))
    except SystemExit as e: code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], (argv, err)
  assert not (out / "summary.json").exists()


def test_checkpoints_from_elsewhere_are_refused(tmp_path, capsys):
  from common.files import save_checkpoint
  ae = gm.Autoencoder(1, 28, 32)
  state = {f"ae.{k}": v for k, v in get_state_dict(ae).items()}
  meta = dict(channels=1, size=28, latent=32, width=8, classes=10, cond=False, schedule="linear", T=1000)
  (tmp_path / "junk.safetensors").write_text("not a checkpoint")
  save_checkpoint(state, tmp_path / "audio.safetensors", meta, script="audio-ml/audio_classify.py", model="cnn")
  save_checkpoint(state, tmp_path / "ae.safetensors", meta, script=gm.SCRIPT, model="ae")
  save_checkpoint(state, tmp_path / "ae16.safetensors", {**meta, "latent": 16}, script=gm.SCRIPT, model="ae")
  save_checkpoint(state, tmp_path / "nometa.safetensors", {}, script=gm.SCRIPT, model="ae")
  save_checkpoint({**state, "ae.extra": Tensor.zeros(2)}, tmp_path / "extra.safetensors", meta, script=gm.SCRIPT, model="ae")
  for name, extra, fragment in [("junk", [], "not a readable safetensors"),
                                ("audio", [], "written by audio-ml/audio_classify.py, not generative/generative_models.py"),
                                ("ae", ["--model", "diffusion"], "holds model 'ae'"), ("ae16", [], "trained with latent=16, this run has latent=32"),
                                ("nometa", [], "metadata lacks"), ("extra", [], "unexpected key 'extra'")]:
    refused_late = ["--quick", "--model", "autoencoder", "--load", tmp_path / f"{name}.safetensors", "--out", tmp_path / "o", *extra]
    try: code = common.run_main(lambda: gm.main([str(a) for a in refused_late]))
    except SystemExit as e: code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], (name, err)


def test_command_line_errors_are_one_line_without_traceback(tmp_path):
  # the same rules through the real command line, one case of each kind
  bad_input(str(SCRIPT), "--lr", "nan", fragments=("not a finite number",))
  bad_input(str(SCRIPT), "--save", "/proc/x.safetensors", fragments=("cannot be written",))
  (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 1, 28, 28) + bytes(784))
  bad_input(str(SCRIPT), "--data", str(tmp_path), "--out", str(tmp_path / "o"), fragments=("no train-images",), env={"PARALLEL": "0"})


# ---- end to end: the documented commands (with --quick) ---------------------------------------------

def doc_outputs() -> set[str]:
  text = gm.__doc__[gm.__doc__.index("Outputs:"):gm.__doc__.index("EXPECTED RESULTS")]
  import re
  return set(re.findall(r"[a-z_]+\.(?:png|json)", text))


@pytest.mark.slow
def test_quick_run_passes_its_checks_and_writes_what_the_docstring_lists(tmp_path):
  from common.bench import validate
  ckpt = tmp_path / "gen.safetensors"
  r = run_script("--quick", "--out", tmp_path, "--save", ckpt, "--json", tmp_path / "steps.json")
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["ae_heldout_mse"] <= gm.TARGETS["quick"].ae_vs_mean * s["ae_mean_image_mse"]     # not a collapsed autoencoder
  assert s["ddpm_loss_drop"] >= 3.0 and s["passed"] is True
  assert "PASS: DDPM loss drop" in r.stdout and "PASS: autoencoder held-out MSE / mean" in r.stdout and "FAIL" not in r.stdout
  written = {p.name for p in tmp_path.iterdir() if p.suffix in (".png", ".json") and p.name != "steps.json"}
  assert written == doc_outputs() - {"ddpm_samples_ancestral.png"}, written ^ doc_outputs()     # --quick draws no ancestral samples
  cases = {rec["case"] for rec in validate(json.loads((tmp_path / "steps.json").read_text()))}
  assert cases == {"classifier train step b=16 (demo)", "ae train step b=16 (demo)", "ddpm train step b=16 (demo)"}, cases
  # --load evaluates without training: the held-out MSE is the same model's
  r2 = run_script("--quick", "--out", tmp_path / "again", "--load", ckpt, "--model", "ae")
  assert r2.returncode == 0, r2.stderr[-2000:]
  s2 = json.loads((tmp_path / "again" / "summary.json").read_text())
  assert s2["ae_heldout_mse"] == pytest.approx(s["ae_heldout_mse"], rel=1e-4) and "ae_train_s" not in s2


@pytest.mark.slow
def test_documented_autoencoder_train_steps(tmp_path):
  r = run_script("--model", "autoencoder", "--train", "--steps", "100", "--quick", "--out", tmp_path)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["settings"]["autoencoder"]["steps"] == 100 and "ddpm_loss_drop" not in s and "classifier_heldout_accuracy" not in s
  assert {p.name for p in tmp_path.iterdir()} == {"ae_loss.png", "ae_reconstructions.png", "ae_interpolation.png", "summary.json"}


@pytest.mark.slow
@pytest.mark.parametrize("model, cases", [
  ("autoencoder", {"AE train step b=16 3x32x32"}),
  # --quick times every DDPM case but the train step (over a minute of compiling on a 2-core CPU; the --quick run trains it)
  ("diffusion", {"U-Net forward b=16", "ancestral step b=16", "DDIM step b=16"}),
])
@pytest.mark.noopt
def test_documented_bench_commands(tmp_path, model, cases):
  from common.bench import validate
  r = run_script("--model", model, "--bench", "--quick", "--json", tmp_path / "b.json")
  assert r.returncode == 0, r.stderr[-3000:]
  records = validate(json.loads((tmp_path / "b.json").read_text()))
  assert {rec["case"] for rec in records} == cases
  assert all(rec["value"] > 0 and rec["kernels"] > 0 and rec["gflop"] > 0 for rec in records)


def test_autoencoder_output_starts_at_the_mean_intensity():
  ae = gm.Autoencoder(1, 28, 8)
  ae.start_at_mean(np.array([0.2]))
  np.testing.assert_allclose(ae.dec2.bias.numpy(), [math.log(0.2 / 0.8)], rtol=1e-6)


def test_torch_reference_has_no_save_flag_it_would_ignore(capsys):
  import importlib.util
  # by path: audio-ml has a torch_reference.py too, and whichever folder is first on sys.path would win
  spec = importlib.util.spec_from_file_location("generative_torch_reference", ROOT / "generative" / "torch_reference.py")
  torch_reference = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(torch_reference)
  with pytest.raises(SystemExit) as e: torch_reference.main(["--save", "x.safetensors"])
  assert e.value.code == 2 and "unrecognized arguments: --save" in capsys.readouterr().err


def test_half_flag_gives_fp16_convolutions_with_fp32_weights_and_loss_scaling():
  from tinygrad import dtypes
  assert gm.parse_args(["--quick", "--half"]).half and not gm.parse_args(["--quick"]).half
  ae = gm.Autoencoder(1, 28, 8)
  gm.make_ae_step(ae, 1e-3, half=True)
  assert ae.enc1.compute_dtype == dtypes.half and ae.dec2.compute_dtype == dtypes.half and ae.enc1.weight.dtype == dtypes.float32
  unet, ema = gm.UNet(1, 8), gm.UNet(1, 8)
  gm.make_ddpm_step(unet, ema, gm.Schedule("linear", 50), 1e-3, 0.1, half=True)
  assert unet.down0.conv1.compute_dtype == dtypes.half and ema.down0.conv1.compute_dtype is None   # the EMA copy samples in fp32
