"""generative/generative_models.py: the diffusion math against closed forms, the networks' shapes and
conditioning, the samplers against an oracle, the data loaders and their bad inputs, and the
--quick and --bench runs end to end (tinygrad's CPU device)."""
import gzip, json, math, os, struct, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "generative" / "generative_models.py"
sys.path.insert(0, str(ROOT / "generative"))
os.environ.setdefault("DEV", "CPU")

import common  # noqa: E402,F401  (before tinygrad)
from tinygrad import Tensor  # noqa: E402
from tinygrad.helpers import Context  # noqa: E402
import generative_models as gm  # noqa: E402


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
  f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
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
  # one conditional U-Net, three forwards that share their kernels (compiling is what costs on a CPU)
  Tensor.manual_seed(0)
  unet = gm.UNet(3, 8, n_classes=10)
  _randomize_output_layer(unet)
  x = Tensor.randn(2, 3, 32, 32)
  a = unet(x, Tensor([10, 10]), Tensor([3, 3])).numpy()
  b = unet(x, Tensor([900, 900]), Tensor([3, 3])).numpy()
  c = unet(x, Tensor([10, 10]), Tensor([7, 7])).numpy()
  assert a.shape == (2, 3, 32, 32)
  assert np.abs(a - b).mean() > 1e-3, "the output ignores t"
  assert np.abs(a - c).mean() > 1e-4, "the output ignores the class"


def test_autoencoder_shapes():
  ae = gm.Autoencoder(3, 32, 16)
  x = Tensor.rand(4, 3, 32, 32)
  z = ae.encode(x)
  assert z.shape == (4, 16)
  y = ae.decode(z).numpy()
  assert y.shape == (4, 3, 32, 32) and 0 <= y.min() and y.max() <= 1


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


# ---- data loaders ---------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray, magic3: int | None = None, gz=False):
  header = bytes([0, 0, 8, magic3 if magic3 is not None else array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  raw = header + array.astype(np.uint8).tobytes()
  path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
  imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
  write_idx(tmp_path / "x", imgs, gz=gz)
  np.testing.assert_array_equal(gm.read_idx(tmp_path / "x"), imgs)


def test_mnist_folder_loader(tmp_path):
  rng = np.random.default_rng(0)
  write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)), gz=True)
  write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(30) % 10, gz=True)
  write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (8, 28, 28)))
  write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(8) % 10)
  d = gm.load_mnist_idx(tmp_path, 32)
  assert d.x_train.shape == (30, 1, 32, 32) and d.x_test.shape == (8, 1, 32, 32)
  assert d.labelled and len(d.names) == 10 and d.x_train.max() <= 1.0


def test_image_folder_loader_with_class_subfolders(tmp_path):
  from PIL import Image
  for cls in ("cats", "dogs"):
    (tmp_path / cls).mkdir()
    for i in range(5):
      Image.fromarray(np.full((40, 30, 3), (200, 30 * i, 0), np.uint8)).save(tmp_path / cls / f"{i}.png")
  d = gm.load_image_folder(tmp_path, 28, seed=0)
  assert d.names == ("cats", "dogs") and d.x_train.shape[1:] == (3, 28, 28)
  assert len(d.x_train) + len(d.x_test) == 10 and d.labelled


def _one_line_error(r, needle):
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
  assert needle in lines[0], lines[0]


def test_bad_inputs_are_one_line_errors(tmp_path):
  bad_magic = tmp_path / "bad-images-idx3-ubyte"
  bad_magic.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 20)
  mism = tmp_path / "mism"
  mism.mkdir()
  write_idx(mism / "train-images-idx3-ubyte", np.zeros((10, 28, 28)))
  write_idx(mism / "train-labels-idx1-ubyte", np.zeros(9))
  trunc = tmp_path / "trunc"
  trunc.mkdir()
  write_idx(trunc / "train-images-idx3-ubyte", np.zeros((10, 28, 28)))
  (trunc / "train-images-idx3-ubyte").write_bytes((trunc / "train-images-idx3-ubyte").read_bytes()[:-50])
  write_idx(trunc / "train-labels-idx1-ubyte", np.zeros(10))
  empty = tmp_path / "empty"
  empty.mkdir()
  not_ckpt = tmp_path / "model.safetensors"
  not_ckpt.write_text("not a checkpoint")
  cases = [
    (["--data", tmp_path / "nope"], "no such file"),
    (["--data", bad_magic], "not an MNIST idx file"),
    (["--data", mism], "10 images but"),
    (["--data", trunc], "header says"),
    (["--data", empty], "no images found"),
    (["--load", not_ckpt, "--quick"], "not a readable safetensors"),
  ]
  for args, needle in cases:
    _one_line_error(run_script(*args, "--out", tmp_path / "o"), needle)
  assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.parametrize("args, needle", [
  (["--width", "10"], "multiple of 4"),
  (["--quick", "--full"], "exclude each other"),
  (["--size", "30"], "invalid choice"),
  (["--quick", "--batch", "5000"], "larger than"),
  (["--ddpm-steps", "0"], "must be > 0"),
])
def test_impossible_flags(args, needle):
  _one_line_error(run_script(*args), needle)


# ---- end to end -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_run_lowers_both_losses_and_writes_artifacts(tmp_path):
  ckpt = tmp_path / "gen.safetensors"
  r = run_script("--quick", "--out", tmp_path, "--save", ckpt)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["ae_loss_drop"] >= 2.0 and s["ddpm_loss_drop"] >= 3.0    # the factors the script checks
  assert "PASS: DDPM loss drop" in r.stdout and "FAIL" not in r.stdout
  for name in ("ae_reconstructions.png", "ae_interpolation.png", "ae_loss.png", "ddpm_samples.png", "ddpm_denoising.png",
               "ddpm_loss.png", "classifier_loss.png"):
    assert (tmp_path / name).stat().st_size > 100, name
  assert 0 <= s["ddpm_quality"]["confident_fraction"] <= 1 and ckpt.exists()
  # loading evaluates without training: the held-out MSE is the same model's
  r2 = run_script("--quick", "--out", tmp_path / "again", "--load", ckpt, "--model", "ae")
  assert r2.returncode == 0, r2.stderr[-2000:]
  s2 = json.loads((tmp_path / "again" / "summary.json").read_text())
  assert s2["ae_heldout_mse"] == pytest.approx(s["ae_heldout_mse"], rel=1e-4) and "ae_train_s" not in s2


@pytest.mark.slow
def test_bench_json_is_valid(tmp_path):
  from common.bench import validate
  r = run_script("--bench", "--quick", "--json", tmp_path / "b.json")
  assert r.returncode == 0, r.stderr[-3000:]
  records = validate(json.loads((tmp_path / "b.json").read_text()))
  cases = {rec["case"] for rec in records}
  # --quick times every case but the DDPM train step (over a minute of compiling on a 2-core CPU; the
  # --quick run above trains that step), so the bench's DDPM train case runs only in the full bench
  assert cases == {"AE train step b=32 3x32x32", "U-Net forward b=32", "ancestral step b=32", "DDIM step b=32"}, cases
  assert all(rec["value"] > 0 and rec["kernels"] > 0 and rec["gflop"] > 0 for rec in records)
