"""stereo/depth_map.py: the math against numpy references, synthetic scenes with exact ground truth,
the --quick demo, --bench JSON, and bad inputs (exit 2, one line, no traceback). CPU, no data files."""
import importlib.util
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "stereo"))
os.environ.setdefault("DEV", "CPU")

import common  # noqa: E402,F401  (before tinygrad)
from tinygrad import Tensor, dtypes  # noqa: E402
import depth_map as dm  # noqa: E402

SCRIPT = ROOT / "stereo" / "depth_map.py"
rng = np.random.default_rng(0)


def run_script(*args, script=SCRIPT, timeout=300):
  env = {**os.environ, "DEV": "CPU", "PYTHONPATH": str(ROOT)}
  return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


# ---- matching costs -----------------------------------------------------------------------------------

def shifted_np(img, D):
  h, w = img.shape
  out = np.zeros((h, w, D), img.dtype)
  for d in range(D): out[:, d:, d] = img[:, :w - d]
  return out


def test_sad_cost_matches_numpy():
  left, right = rng.uniform(0, 255, (5, 9)).astype(np.float32), rng.uniform(0, 255, (5, 9)).astype(np.float32)
  got = dm.sad_cost(Tensor(left), Tensor(right), 4).numpy()
  ref = np.abs(left[:, :, None] - shifted_np(right, 4))
  inside = np.arange(9)[None, :, None] >= np.arange(4)[None, None, :]
  ref = np.where(inside, ref, dm.OUT_OF_VIEW * 255.0)
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)


def census_np(img, window):
  h, w = img.shape
  r = window // 2
  p = np.pad(img, r, mode="edge")
  bits = [(p[dy:dy + h, dx:dx + w] < img) for dy in range(window) for dx in range(window) if (dy, dx) != (r, r)]
  return np.stack(bits, -1)       # (H, W, w²−1) bools


@pytest.mark.parametrize("window", [3, 7])
def test_census_transform_and_hamming_cost_match_numpy(window):
  left, right = rng.integers(0, 8, (6, 10)).astype(np.float32), rng.integers(0, 8, (6, 10)).astype(np.float32)  # ties on purpose
  bits = census_np(left, window)
  words = [w.numpy().astype(np.uint64) for w in dm.census_transform(Tensor(left), window)]
  assert len(words) == -(-(window * window - 1) // 32)
  np.testing.assert_array_equal(sum(w << np.uint64(32 * i) for i, w in enumerate(words)),
                                sum(bits[..., k].astype(np.uint64) << np.uint64(k) for k in range(bits.shape[-1])))
  D = 5
  got = dm.census_cost(Tensor(left), Tensor(right), D, window).numpy()
  bl, br = census_np(left, window), census_np(right, window)
  ref = np.full((6, 10, D), dm.OUT_OF_VIEW * (window * window - 1), np.float32)
  for d in range(D): ref[:, d:, d] = (bl[:, d:] != br[:, :10 - d]).sum(-1)
  np.testing.assert_array_equal(got, ref)


def test_popcount_matches_python():
  vals = np.concatenate([rng.integers(0, 2**32, 200, dtype=np.uint64).astype(np.uint32), np.array([0, 1, 0xFFFFFFFF, 0x80000000], np.uint32)])
  got = dm.popcount32(Tensor(vals, dtype=dtypes.uint32)).numpy()
  np.testing.assert_array_equal(got, [bin(int(v)).count("1") for v in vals])


def test_box_sum_matches_numpy():
  cost = rng.uniform(0, 1, (7, 8, 3)).astype(np.float32)
  got = dm.box_sum(Tensor(cost), 5).numpy()
  p = np.pad(cost, ((2, 2), (2, 2), (0, 0)))
  ref = sum(p[dy:dy + 7, dx:dx + 8] for dy in range(5) for dx in range(5))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# ---- semi-global matching against a pixel-by-pixel numpy loop -------------------------------------------

STEP = {"→": (1, 0), "←": (-1, 0), "↓": (0, 1), "↑": (0, -1), "↘": (1, 1), "↙": (-1, 1), "↗": (1, -1), "↖": (-1, -1)}


def sgm_np(cost, p1, p2, names):
  h, w, D = cost.shape
  total = np.zeros_like(cost, dtype=np.float64)
  for name in names:
    dx, dy = STEP[name]
    L = np.zeros_like(total)
    for y in (range(h) if dy >= 0 else range(h - 1, -1, -1)):
      for x in (range(w) if dx >= 0 else range(w - 1, -1, -1)):
        px, py = x - dx, y - dy
        if not (0 <= px < w and 0 <= py < h): L[y, x] = cost[y, x]; continue
        prev = L[py, px]
        m = prev.min()
        minus = np.concatenate([[np.inf], prev[:-1]])
        plus = np.concatenate([prev[1:], [np.inf]])
        L[y, x] = cost[y, x] + np.minimum.reduce([prev, minus + p1, plus + p1, np.full(D, m + p2)]) - m
    total += L
  return total


@pytest.mark.parametrize("h,w,paths", [(6, 9, 8), (9, 5, 4)])
def test_sgm_matches_numpy_recurrence(h, w, paths):
  cost = rng.uniform(0, 10, (h, w, 4)).astype(np.float32)
  sgm = dm.SemiGlobal(h, w, 4, paths, p1=1.5, p2=6.0)
  got = sgm(Tensor(cost)).numpy()
  ref = sgm_np(cost, 1.5, 6.0, [d[0] for d in dm.DIRECTIONS[:paths]])
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


# ---- disparity selection --------------------------------------------------------------------------------

def test_right_view_costs_shear():
  agg = rng.uniform(0, 1, (3, 7, 4)).astype(np.float32)
  got = dm.right_view_costs(Tensor(agg)).numpy()
  for x in range(7):
    for d in range(4):
      assert got[:, x, d] == pytest.approx(agg[:, x + d, d] if x + d < 7 else np.full(3, dm.BIG), rel=1e-6)


def test_subpixel_vertex_of_parabola():
  d_true = np.array([2.3, 4.75, 1.5]).reshape(3, 1, 1)
  agg = Tensor(((np.arange(8).reshape(1, 1, 8) - d_true) ** 2).astype(np.float32))
  best, d_best = dm.winner_take_all(agg)
  got = (d_best.float() + dm.subpixel_offset(agg, best, d_best)).numpy().ravel()
  np.testing.assert_allclose(got, d_true.ravel(), atol=1e-4)


def test_median3x3_matches_numpy():
  img = rng.integers(0, 5, (6, 7)).astype(np.float32)
  got = dm.median3x3(Tensor(img)).numpy()
  p = np.pad(img, 1, mode="edge")
  ref = np.median(np.stack([p[dy:dy + 6, dx:dx + 7] for dy in range(3) for dx in range(3)]), axis=0)
  np.testing.assert_array_equal(got, ref)


# ---- whole matcher on synthetic scenes with exact ground truth -------------------------------------------

def scene(kind, h=48, w=80, D=16, seed=3, noise=1.0):
  left, right, gt, occ = dm.render_scene(dm.make_scene(kind, h, w, D, seed), h, w, noise, seed)
  return left, right, gt, occ


def interior(shape, border):
  m = np.zeros(shape, bool); m[border:-border, border:-border] = True
  return m


@pytest.mark.parametrize("aggregation", ["box", "sgm"])
def test_fronto_parallel_scene_recovers_exact_integer_disparities(aggregation):
  left, right, gt, occ = scene("fronto")
  assert np.all(gt == np.round(gt))
  cfg = dm.MatchConfig(max_disp=16, aggregation=aggregation, paths=8, subpixel=False, median=True)
  disp, valid = (t.numpy() for t in dm.StereoMatcher(*left.shape, cfg).match(Tensor(left), Tensor(right)))
  # away from depth edges (the box window straddles them) and the unmatched left band
  edge = np.zeros_like(occ)
  for dy in range(-3, 4):
    for dx in range(-3, 4): edge |= np.roll(gt, (dy, dx), (0, 1)) != gt
  region = interior(gt.shape, 3) & ~occ & ~edge & (np.arange(gt.shape[1])[None] >= 16)
  exact = (disp == gt)[region].mean()
  assert exact >= 0.99, f"{aggregation}: only {exact:.3f} exact"


def test_subpixel_on_slanted_plane_mean_error_below_quarter_pixel():
  left, right, gt, occ = scene("slanted", noise=0.5)
  cfg = dm.MatchConfig(max_disp=16, aggregation="sgm", paths=8, median=False)
  disp, valid = (t.numpy() for t in dm.StereoMatcher(*left.shape, cfg).match(Tensor(left), Tensor(right)))
  region = interior(gt.shape, 4) & valid.astype(bool) & ~occ
  assert region.mean() > 0.6
  err = np.abs(disp - gt)[region].mean()
  assert err < 0.25, f"mean sub-pixel error {err:.3f} px"
  # integer disparities cannot do better than rounding the truth; the parabola must beat that
  assert err < 0.7 * np.abs(np.round(gt) - gt)[region].mean()


def test_left_right_check_flags_occlusions():
  left, right, gt, occ = scene("boxes")
  cfg = dm.MatchConfig(max_disp=16, paths=8, uniqueness=0)     # only the left-right check can reject
  disp, valid = (t.numpy() for t in dm.StereoMatcher(*left.shape, cfg).match(Tensor(left), Tensor(right)))
  valid = valid.astype(bool)
  hidden = occ & (np.arange(gt.shape[1])[None] - gt >= 0)     # occluded by a box, not by the image border
  visible = ~occ & interior(gt.shape, 3)
  assert hidden.sum() > 100
  assert (~valid)[hidden].mean() > 0.7, f"only {(~valid)[hidden].mean():.2f} of occluded pixels flagged"
  assert (~valid)[visible].mean() < 0.1


def test_jit_replay_follows_new_inputs():
  """TinyJit replays the captured kernels, SGM's per-step views included: new images, new answer."""
  a, b = scene("boxes", seed=1), scene("boxes", seed=2)
  cfg = dm.MatchConfig(max_disp=16, paths=8)
  matcher = dm.StereoMatcher(48, 80, cfg)
  for left, right, _, _ in (a, a, b):
    jit_disp = matcher.match(Tensor(left), Tensor(right))[0].numpy()
  direct = dm.StereoMatcher(48, 80, cfg)._match(Tensor(b[0]), Tensor(b[1]))[0].numpy()
  np.testing.assert_allclose(jit_disp, direct, atol=1e-5)


# ---- depth, obstacles, evaluation ----------------------------------------------------------------------

def test_depth_from_disparity_and_q_matrix():
  calib = dm.Calibration.from_focal_baseline(700.0, 0.06, 4, 5)
  assert calib.focal_px == 700.0 and calib.baseline_m == pytest.approx(0.06)
  disp = np.array([[1, 2, 42, 0.5, 0]] * 4, np.float32)
  valid = disp > 0
  depth, ok = dm.depth_from_disparity(Tensor(disp), Tensor(valid), calib.Q)
  depth, ok = depth.numpy(), ok.numpy()
  np.testing.assert_allclose(depth[valid], 700 * 0.06 / disp[valid], rtol=1e-5)
  assert not ok[~valid].any() and np.isnan(depth[~valid]).all()
  # a general Q (cx ≠ cx' adds a constant to W): Z/W computed by numpy from the same matrix
  Q = calib.Q.copy(); Q[3, 3] = 0.5
  x = np.arange(5)[None].repeat(4, 0); y = np.arange(4)[:, None].repeat(5, 1)
  hom = np.einsum("ij,jhw->ihw", Q, np.stack([x, y, disp, np.ones_like(disp)]))
  got = dm.depth_from_disparity(Tensor(disp), Tensor(valid), Q)[0].numpy()
  np.testing.assert_allclose(got[valid], (hom[2] / hom[3])[valid], rtol=1e-5)


def test_obstacle_summary_grid_and_heading():
  depth = np.full((4, 6), 5.0); depth[:, :2] = 1.0; depth[:, 4:] = 9.0
  valid = np.ones_like(depth, bool); valid[:, 4:] = False            # the far right is unknown
  grid, clearance, heading = dm.obstacle_summary(depth, valid, 2, 3, focal_px=3.0, cx=2.5)
  assert grid[0].tolist()[:2] == [1.0, 5.0] and np.isnan(grid[0, 2])
  assert heading == pytest.approx(np.degrees(np.arctan2(3.0 - 2.5, 3.0)))   # middle column, not the unknown one
  _, _, none = dm.obstacle_summary(depth, np.zeros_like(valid), 2, 3, 3.0, 2.5)
  assert none is None


def test_fill_and_evaluate():
  disp = np.array([[5, 0, 0, 9, 9]], np.float32)
  valid = np.array([[1, 0, 0, 1, 1]], bool)
  np.testing.assert_array_equal(dm.fill_invalid(disp, valid), [[5, 5, 5, 9, 9]])    # the farther neighbour
  gt = np.array([[5, 5, 9, 9.4, 7]], np.float32)
  s = dm.evaluate(disp, valid, gt, np.ones_like(valid))
  assert s["bad1.0_pct"] == pytest.approx(40.0) and s["bad0.5_pct"] == pytest.approx(40.0)
  assert s["kept_bad1.0_pct"] == pytest.approx(100 / 3) and s["density_pct"] == pytest.approx(60.0)


def test_pfm_round_trip(tmp_path):
  d = rng.uniform(0, 60, (5, 7)).astype(np.float32); d[1, 2] = np.inf
  dm.write_pfm(d, tmp_path / "d.pfm")
  np.testing.assert_array_equal(dm.read_pfm(str(tmp_path / "d.pfm")), d)


# ---- the script end to end ------------------------------------------------------------------------------

def test_quick_demo_passes_and_writes_artifacts(tmp_path):
  r = run_script("--quick", "--out", tmp_path, "--save", tmp_path / "disp.safetensors")
  assert r.returncode == 0, r.stdout + r.stderr
  assert "PASS: bad-1.0" in r.stdout and "nearest measurable" in r.stdout and "suggested heading" in r.stdout
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["evaluation_visible"]["bad1.0_pct"] <= 3.0 and summary["occluded_flagged_pct"] > 50
  for f in ("disparity.png", "depth.png", "error.png", "overview.png", "disparity.pfm"): assert (tmp_path / f).stat().st_size > 0
  # --load evaluates a saved disparity without matching
  r2 = run_script("--quick", "--out", tmp_path / "again", "--load", tmp_path / "disp.safetensors")
  assert r2.returncode == 0 and "loaded disparity" in r2.stdout
  assert json.loads((tmp_path / "again" / "summary.json").read_text())["evaluation"] == summary["evaluation"]


def test_bench_quick_json_validates(tmp_path):
  from common.bench import validate
  r = run_script("--bench", "--quick", "--size", "64x48", "--json", tmp_path / "b.json")
  assert r.returncode == 0, r.stdout + r.stderr
  records = validate(json.loads((tmp_path / "b.json").read_text()))
  cases = [x["case"] for x in records]
  assert any("SGM" in c for c in cases) and any("box" in c for c in cases) and any(c.startswith("SAD 5x5") for c in cases)
  assert all(x["unit"] == "frames/s" and x["value"] > 0 for x in records)


# ---- bad inputs: one line, exit 2, no traceback, nothing written ----------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
  from PIL import Image
  d = tmp_path_factory.mktemp("img")
  a = (rng.uniform(0, 255, (40, 100))).astype(np.uint8)
  Image.fromarray(a).save(d / "l.png"); Image.fromarray(a).save(d / "r.png")
  Image.fromarray(a[:, :90]).save(d / "small.png")
  (d / "junk.png").write_bytes(b"not an image")
  Image.fromarray(np.zeros((30, 30), np.uint8)).save(d / "gt_wrong.png")
  np.savez(d / "noq.npz", K=np.eye(3))
  return d


@pytest.mark.parametrize("args,needle", [
  (["--left", "{d}/missing.png", "--right", "{d}/r.png"], "no such file"),
  (["--left", "{d}/l.png", "--right", "{d}/small.png"], "sizes differ"),
  (["--left", "{d}/junk.png", "--right", "{d}/r.png"], "cannot be read"),
  (["--left", "{d}/l.png", "--right", "{d}/r.png", "--gt", "{d}/gt_wrong.png"], "ground truth"),
  (["--left", "{d}/l.png", "--right", "{d}/r.png", "--calib", "{d}/noq.npz"], "'Q'"),
  (["--left", "{d}/l.png", "--right", "{d}/r.png", "--calib", "{d}/junk.png"], "not an .npz"),
  (["--left", "{d}/l.png", "--right", "{d}/r.png", "--max-disp", "128"], "--max-disp"),
  (["--left", "{d}/l.png"], "--left and --right go together"),
  (["--max-disp", "2"], "--max-disp"),
  (["--size", "12xq"], "WIDTHxHEIGHT"),
  (["--quick", "--load", "{d}/missing.safetensors"], "no such file"),
  (["--block", "4"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(images, tmp_path, args, needle):
  r = run_script(*[a.format(d=images) for a in args], "--out", tmp_path / "o", timeout=120)
  assert r.returncode == 2, r.stdout + r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in r.stderr and needle in lines[0], r.stderr
  assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---- calibration (OpenCV, optional) and the PyTorch reference (optional) --------------------------------

CALIB = ROOT / "stereo" / "calibrate_stereo.py"
TORCH_REF = ROOT / "stereo" / "torch_reference.py"


def run_without(module, script, *args):
  """Run a script as if `module` were not installed."""
  code = f"import sys, runpy; sys.modules[{module!r}] = None; sys.argv = [{str(script)!r}, *{list(map(str, args))!r}]; runpy.run_path({str(script)!r}, run_name='__main__')"
  env = {**os.environ, "DEV": "CPU", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'stereo'}"}
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("module,script,args", [("cv2", CALIB, ["--synthetic"]), ("torch", TORCH_REF, ["--quick"])])
def test_optional_extras_absent_is_one_line_exit_2(module, script, args):
  r = run_without(module, script, *args)
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "pip install" in r.stderr, r.stderr


def test_calibration_recovers_synthetic_rig_and_depth_map_reads_it(tmp_path):
  cv2 = pytest.importorskip("cv2")
  r = run_script("--synthetic", "--views", 10, "--out", tmp_path / "calib.npz", script=CALIB)
  assert r.returncode == 0 and "PASS: baseline error" in r.stdout, r.stdout + r.stderr
  assert "per-view reprojection error" in r.stdout
  calib = dm.load_calibration(str(tmp_path / "calib.npz"), 480, 640)
  assert calib.baseline_m == pytest.approx(0.06, abs=1e-3) and calib.focal_px == pytest.approx(700, rel=0.02)
  with pytest.raises(common.UserError, match="made for 640x480"):
    dm.load_calibration(str(tmp_path / "calib.npz"), 48, 64)
  # the numpy remap depth_map.py applies equals OpenCV's
  img = rng.uniform(0, 255, (480, 640)).astype(np.float32)
  ours = dm.remap_bilinear(img, calib.maps[0], calib.maps[1])
  theirs = cv2.remap(img, calib.maps[0], calib.maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  inside = (calib.maps[0] >= 0) & (calib.maps[0] <= 638) & (calib.maps[1] >= 0) & (calib.maps[1] <= 478)
  np.testing.assert_allclose(ours[inside], theirs[inside], atol=0.2)


def test_calibration_bad_input(tmp_path):
  r = run_script("--left-glob", tmp_path / "none_*.png", "--right-glob", tmp_path / "none_*.png", script=CALIB)
  if importlib.util.find_spec("cv2") is None:    # the optional extra is missing: that is what it must say
    assert r.returncode == 2 and r.stderr.strip() == "error: calibrate_stereo.py needs OpenCV: pip install opencv-python-headless", r.stderr
    return
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "matches no file" in r.stderr, r.stderr
  r = run_script("--synthetic", "--board", "2x9", script=CALIB)
  assert r.returncode == 2 and "inner corners" in r.stderr


def test_torch_reference_agrees(tmp_path):
  pytest.importorskip("torch")
  from common.bench import validate
  r = run_script("--quick", "--json", tmp_path / "t.json", script=TORCH_REF)
  assert r.returncode == 0 and "100.00 %" in r.stdout, r.stdout + r.stderr
  assert validate(json.loads((tmp_path / "t.json").read_text()))[0]["agreement_with_tinygrad_pct"] == 100.0


def test_occlusion_from_two_ground_truths_matches_the_renderer():
  left, right, gt, occ = scene("boxes")
  y, x = np.mgrid[0:48, 0:80].astype(np.float64)
  gt_right, _ = dm.visible(dm.make_scene("boxes", 48, 80, 16, 3), x, y, right_view=True)
  ones = np.ones_like(occ)
  derived = dm.occlusion_from_ground_truth(gt, ones, gt_right.astype(np.float32), ones)
  assert occ.sum() > 100 and (derived == occ).mean() > 0.98
