"""stereo/: the math against numpy references, synthetic scenes with exact ground truth, the --quick demo,
--bench JSON, calibration, and the hostile-input rules (exit 2, one line, no traceback, before any work).
CPU, no data files."""
import ast, importlib.util, json, os, struct, subprocess, sys, zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "stereo"))
os.environ.setdefault("DEV", "CPU")

import common  # noqa: E402  (before tinygrad)
from tinygrad import Tensor, dtypes  # noqa: E402
import depth_map as dm  # noqa: E402
import scene as sc  # noqa: E402
import stereo_files as sf  # noqa: E402
from conftest import bad_input, run_py  # noqa: E402

SCRIPT, CALIB, TORCH_REF = "stereo/depth_map.py", "stereo/calibrate_stereo.py", "stereo/torch_reference.py"
CPU = {"DEV": "CPU"}
rng = np.random.default_rng(0)
HAVE_CV2 = importlib.util.find_spec("cv2") is not None


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
        if not (0 <= px < w and 0 <= py < h):
          L[y, x] = cost[y, x]
          continue
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
  left, right, gt, occ = sc.synthetic_pair(kind, w, h, D, noise, seed)
  return left, right, gt, occ


def interior(shape, border):
  m = np.zeros(shape, bool)
  m[border:-border, border:-border] = True
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
  Q = calib.Q.copy()
  Q[3, 3] = 0.5
  x, y = np.arange(5)[None].repeat(4, 0), np.arange(4)[:, None].repeat(5, 1)
  hom = np.einsum("ij,jhw->ihw", Q, np.stack([x, y, disp, np.ones_like(disp)]))
  got = dm.depth_from_disparity(Tensor(disp), Tensor(valid), Q)[0].numpy()
  np.testing.assert_allclose(got[valid], (hom[2] / hom[3])[valid], rtol=1e-5)


def test_obstacle_summary_grid_and_heading():
  depth = np.full((4, 6), 5.0)
  depth[:, :2], depth[:, 4:] = 1.0, 9.0
  valid = np.ones_like(depth, bool)
  valid[:, 4:] = False            # the far right is unknown
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
  d = rng.uniform(0, 60, (5, 7)).astype(np.float32)
  d[1, 2] = np.inf
  sf.write_pfm(d, tmp_path / "d.pfm")
  np.testing.assert_array_equal(sf.read_pfm(str(tmp_path / "d.pfm")), d)


# ---- the script reads algorithm first (issue 16) ---------------------------------------------------------

def test_depth_map_reads_math_first_with_short_functions():
  src = (ROOT / SCRIPT).read_text()
  lines, tree = src.count("\n"), ast.parse(src)
  assert lines <= 700, f"depth_map.py has {lines} lines"
  first_math = next(n.lineno for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "shifted_views")
  assert first_math < lines / 3, f"the cost volume starts at line {first_math} of {lines}"
  assert src.index("# --- plumbing ---") > src.index("def score_and_check")
  for path in ("depth_map.py", "stereo_files.py", "stereo_cli.py", "stereo_bench.py", "scene.py", "calibrate_stereo.py"):
    for node in ast.walk(ast.parse((ROOT / "stereo" / path).read_text())):
      if isinstance(node, ast.FunctionDef): assert node.end_lineno - node.lineno < 55, f"{path}:{node.name} is {node.end_lineno - node.lineno} lines"


def test_docstring_says_what_out_of_view_matches_cost():
  """The docstring once said out-of-view matches cost the maximum while OUT_OF_VIEW was 0.25."""
  assert "get the largest cost" not in dm.__doc__ and "--out-of-view" in dm.__doc__ and f"default {dm.OUT_OF_VIEW:g}" in dm.__doc__
  assert dm.MatchConfig().out_of_view == dm.OUT_OF_VIEW < 1
  full = dm.sad_cost(Tensor.zeros(2, 6), Tensor.zeros(2, 6), 4, out_of_view=1.0).numpy()
  assert full[0, 0, 3] == 255.0 and full[0, 5, 3] == 0.0      # the fraction is applied where x − d < 0, nowhere else


# ---- inputs: 16-bit images, ground truth, calibration ------------------------------------------------------

def test_16_bit_pair_and_ground_truth_read_by_their_real_range(tmp_path):
  """16-bit PNGs used to come in as a flat image; ground truth of either depth is read unscaled."""
  from PIL import Image
  left, _, gt, _ = scene("boxes")
  eight = np.round(left).astype(np.uint8)
  Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "l16.png")        # same picture, 16 bits
  Image.fromarray(eight).save(tmp_path / "l8.png")
  assert Image.open(tmp_path / "l16.png").mode.startswith("I")
  np.testing.assert_allclose(sf.read_grey(str(tmp_path / "l16.png")), eight, atol=1e-3)
  np.testing.assert_allclose(sf.read_grey(str(tmp_path / "l8.png")), eight, atol=1e-3)
  Image.fromarray(np.round(gt * 256).astype(np.uint16)).save(tmp_path / "gt16.png")
  Image.fromarray(np.round(gt * 4).astype(np.uint8)).save(tmp_path / "gt8.png")     # Middlebury 2003: 8-bit L, 4·d
  for name, scale, tol in (("gt16.png", 256, 1 / 512), ("gt8.png", 4, 1 / 8)):
    d, known = sf.load_ground_truth(str(tmp_path / name), scale, gt.shape)
    assert known.all() and np.abs(d - gt).max() <= tol + 1e-6, name


def test_calibration_maps_of_the_right_camera_are_checked_too(tmp_path):
  """--calib checked only the left map's shape: right maps of another size gave an IndexError."""
  Q = dm.Calibration.from_focal_baseline(100.0, 0.06, 40, 50).Q
  ok, small = np.zeros((40, 50), np.float32), np.zeros((30, 50), np.float32)
  np.savez(tmp_path / "c.npz", Q=Q, map1x=ok, map1y=ok, map2x=small, map2y=small)
  with pytest.raises(common.UserError, match=r"made for 50x30 images \(map2x\)"): sf.load_calibration(str(tmp_path / "c.npz"), 40, 50)
  np.savez(tmp_path / "c.npz", Q=Q, map1x=ok, map1y=ok, map2x=ok, map2y=np.full_like(ok, np.nan))
  with pytest.raises(common.UserError, match="map2y holds values that are not finite"): sf.load_calibration(str(tmp_path / "c.npz"), 40, 50)
  np.savez(tmp_path / "c.npz", Q=Q, map1x=ok, map1y=ok)
  with pytest.raises(common.UserError, match="not all of"): sf.load_calibration(str(tmp_path / "c.npz"), 40, 50)


# ---- hostile input: one line, exit 2, before any matching --------------------------------------------------

def png_claiming(path, width, height):
  """A valid 1x1 PNG whose header then claims width x height (a decompression bomb's header)."""
  from PIL import Image
  Image.new("L", (1, 1)).save(path)
  raw = bytearray(path.read_bytes())
  raw[16:24] = struct.pack(">II", width, height)
  raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
  path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  from PIL import Image
  d = tmp_path_factory.mktemp("inputs")
  a = rng.uniform(0, 255, (40, 100)).astype(np.uint8)
  for name, img in (("l.png", a), ("r.png", a), ("small.png", a[:, :90]), ("narrow.png", a[:, :12]), ("rgb_gt.png", np.stack([a] * 3, 2)),
                    ("gt_wrong.png", np.zeros((30, 30), np.uint8)), ("gt_zero.png", np.zeros((40, 100), np.uint8)), ("gt.png", a)):
    Image.fromarray(img).save(d / name)
  (d / "junk.png").write_bytes(b"not an image")
  (d / "bad.pfm").write_bytes(b"Pf\n100 40\nnan\n")
  (d / "short.pfm").write_bytes(b"Pf\n100 40\n-1.0\n" + b"\0" * 12)
  png_claiming(d / "bomb.png", 60000, 60000)
  Q = dm.Calibration.from_focal_baseline(100.0, 0.06, 40, 100).Q
  np.savez(d / "noq.npz", K=np.eye(3))
  np.savez(d / "badq.npz", Q=np.full((4, 4), np.nan))
  np.savez(d / "right_maps_small.npz", Q=Q, map1x=np.zeros((40, 100), np.float32), map1y=np.zeros((40, 100), np.float32),
           map2x=np.zeros((20, 10), np.float32), map2y=np.zeros((20, 10), np.float32))
  common.files.save_checkpoint({"w": Tensor.ones(2, 2)}, d / "other.safetensors", script="audio-ml/audio_classify.py", model="cnn")
  (d / "adir").mkdir()
  (d / "afile").write_text("x")
  return d


def matching_is_not_reached(*a, **k): raise AssertionError("the matcher was built before the input was refused")


def refused(capsys, monkeypatch, main, *argv) -> str:
  """Run a script's main in this process as run_main would: exit 2, one line, no traceback -> the line."""
  monkeypatch.setattr(dm, "StereoMatcher", matching_is_not_reached)
  try: rc = common.run_main(lambda: main([str(a) for a in argv]), open_device=False)
  except SystemExit as e: rc = e.code
  err = capsys.readouterr().err
  lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
  assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
  return lines[0]


PAIR = ["--left", "{d}/l.png", "--right", "{d}/r.png"]
HOSTILE = [   # (arguments, a fragment of the one line)
  (["--left", "{d}/missing.png", "--right", "{d}/r.png"], "no such file"),
  (["--left", "{d}/adir", "--right", "{d}/r.png"], "no such file"),
  (["--left", "{d}/l.png", "--right", "{d}/small.png"], "sizes differ"),
  (["--left", "{d}/junk.png", "--right", "{d}/r.png"], "cannot be read"),
  (["--left", "{d}/bomb.png", "--right", "{d}/bomb.png"], "60000x60000"),
  (["--left", "{d}/narrow.png", "--right", "{d}/narrow.png", "--max-disp", "16"], "not wider than"),
  (PAIR + ["--max-disp", "128"], "not wider than"),
  (PAIR + ["--gt", "{d}/gt_wrong.png"], "30x30"),
  (PAIR + ["--gt", "{d}/gt_zero.png"], "no known pixel"),
  (PAIR + ["--gt", "{d}/rgb_gt.png"], "one-channel map"),
  (PAIR + ["--gt", "{d}/bad.pfm"], "not a PFM"),
  (PAIR + ["--gt", "{d}/short.pfm"], "PFM data is 3 values"),
  (PAIR + ["--gt", "{d}/gt.png", "--eval-border", "50"], "--eval-border 50"),
  (PAIR + ["--gt", "{d}/gt.png", "--gt-right", "{d}/gt_wrong.png"], "30x30"),
  (PAIR + ["--calib", "{d}/noq.npz"], "'Q'"),
  (PAIR + ["--calib", "{d}/badq.npz"], "finite 4x4"),
  (PAIR + ["--calib", "{d}/junk.png"], "not an .npz"),
  (PAIR + ["--calib", "{d}/missing.npz"], "no such file"),
  (PAIR + ["--calib", "{d}/right_maps_small.npz"], "map2x"),
  (PAIR + ["--gt-scale", "inf", "--gt", "{d}/gt.png"], "not a finite number"),
  (["--lr-max-diff", "nan"], "not a finite number"),
  (["--noise", "nan"], "not a finite number"),
  (["--p1", "inf"], "not a finite number"),
  (["--baseline-m", "-1"], "between"),
  (["--focal-px", "nan"], "not a finite number"),
  (["--uniqueness", "100"], "between 0 and 99"),
  (["--out-of-view", "2"], "between 0 and 1"),
  (["--target-bad1", "nan"], "not a finite number"),
  (["--seed", "-1"], "--seed"),
  (["--max-disp", "2"], "at least 4"),
  (["--max-disp", "0"], "must be > 0"),
  (["--size", "12xq"], "WIDTHxHEIGHT"),
  (["--size", "320x240,64x48"], "one WIDTHxHEIGHT"),
  (["--size", "20000x20000"], "GiB"),
  (["--grid", "500x3"], "more cells"),
  (["--repeat", "0"], "must be > 0"),
  (["--eval-border", "-1"], "must be >= 0"),
  (["--block", "4"], "invalid choice"),
  (["--p1", "100"], "--p2 >= --p1"),
  (["--aggregation", "box", "--paths", "4"], "SGM"),
  (["--block", "7"], "--aggregation box"),
  (["--cost", "sad", "--census-window", "3"], "--cost census"),
  (["--left", "{d}/l.png"], "--left and --right go together"),
  (["--gt", "{d}/gt.png"], "--gt needs --left"),
  (PAIR + ["--gt-right", "{d}/gt.png"], "--gt-right goes with --gt"),
  (PAIR + ["--scene", "fronto"], "synthetic scene"),
  (["--calib", "{d}/noq.npz"], "give --left/--right"),
  (PAIR + ["--calib", "{d}/noq.npz", "--focal-px", "500"], "Q matrix"),
  (PAIR + ["--target-bad1", "5"], "give --gt"),
  (["--sizes", "64x48"], "add --bench"),
  (["--bench", "--repeat", "5"], "belong to the demo"),
  (["--bench", "--save-disparity", "{d}/x.safetensors"], "belong to the demo"),
  (["--bench"] + PAIR, "needs --gt"),
  (["--bench", "--sizes", "64x48", "--disparities", "64"], "not wider than"),
  (["--json", "{d}/t.json", "--repeat", "2"], "--repeat 3 or more"),
  (["--load-disparity", "{d}/missing.safetensors"], "no such file"),
  (["--load-disparity", "{d}/other.safetensors"], "written by audio-ml"),
  (["--load-disparity", "{d}/other.safetensors", "--paths", "4"], "no effect"),
  (["--load-disparity", "{d}/other.safetensors", "--json", "{d}/t.json"], "nothing is matched"),
  (["--out", "/proc/stereo"], "cannot be written"),
  (["--out", "{d}/afile"], "not a folder"),
  (["--json", "/dev/null"], "not a regular file"),
  (["--json", "{d}/adir"], "is a folder"),
  (["--save-disparity", "/sys/d.safetensors"], "cannot be written"),
  (["--save-disparity", "{d}/adir"], "is a folder"),
]


@pytest.mark.parametrize("args,needle", HOSTILE, ids=[" ".join(a).replace("{d}/", "") for a, _ in HOSTILE])
def test_hostile_input_is_one_line_before_any_matching(files, tmp_path, capsys, monkeypatch, args, needle):
  line = refused(capsys, monkeypatch, dm.main, *[a.format(d=files) for a in args], "--out", tmp_path / "o") if "--out" not in args else \
    refused(capsys, monkeypatch, dm.main, *[a.format(d=files) for a in args])
  assert needle in line, line
  assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())       # nothing half-written


def test_bad_input_end_to_end_has_no_traceback(files):
  """The same rules seen from outside (subprocesses, as a user runs them): a bomb PNG and an unwritable --out."""
  bad_input(SCRIPT, "--left", files / "bomb.png", "--right", files / "bomb.png", fragments=("60000x60000",), env=CPU)
  bad_input(SCRIPT, "--gt-scale", "inf", fragments=("not a finite number",), env=CPU)
  bad_input(CALIB, "--synthetic", "--out", "/proc/calib", fragments=("--out /proc/calib cannot be written",), env=CPU)


def test_quick_changes_defaults_only():
  d = dm.MatchConfig()
  quick = dm.parse_args(["--quick"], dm.__doc__, d)
  assert (quick.size, quick.max_disp, quick.repeat, quick.sizes, quick.disparities) == ([(128, 96)], 16, 1, [(64, 48)], [16])
  typed = dm.parse_args(["--quick", "--size", "100x80", "--max-disp", "24", "--repeat", "2"], dm.__doc__, d)
  assert (typed.size, typed.max_disp, typed.repeat) == ([(100, 80)], 24, 2)
  assert dm.parse_args(["--quick", "--bench", "--disparities", "32"], dm.__doc__, d).disparities == [32]
  assert dm.parse_args([], dm.__doc__, d).max_disp == d.max_disp == 64
  import importlib.util      # by path: several projects have a torch_reference.py, and another may be imported already
  spec = importlib.util.spec_from_file_location("stereo_torch_reference", ROOT / TORCH_REF)
  torch_reference = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(torch_reference)
  old_argv = sys.argv
  assert torch_reference.parse_args(["--quick", "--size", "80x60"]).size == [(80, 60)]      # --quick used to override --size
  assert sys.argv is old_argv


def test_help_names_what_is_written():
  out = run_py(SCRIPT, "--help", env=CPU).stdout
  assert "--save-disparity" in out and "--load-disparity" in out and "\n  --save PATH" not in out and "\n  --load PATH" not in out
  assert "disparity map and its valid mask" in out
  calib_help = run_py(CALIB, "--help", env=CPU).stdout
  assert "--out DIR" in calib_help and "--quick" in calib_help and "--out-dir" not in calib_help


# ---- the script end to end ------------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_demo_passes_writes_artifacts_and_json(tmp_path):
  from common.bench import validate
  r = run_py(SCRIPT, "--quick", "--out", str(tmp_path), "--save-disparity", str(tmp_path / "disp.safetensors"),
             "--json", str(tmp_path / "t.json"), env=CPU)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "PASS: bad-1.0" in r.stdout and "nearest measurable" in r.stdout and "suggested heading" in r.stdout
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["evaluation_visible"]["bad1.0_pct"] <= 3.0 and summary["occluded_flagged_pct"] > 50
  for f in ("disparity.png", "depth.png", "error.png", "overview.png", "disparity.pfm"): assert (tmp_path / f).stat().st_size > 0
  record, = validate(json.loads((tmp_path / "t.json").read_text()))       # --json in the demo: the matcher's replays
  assert len(record["warmup_ms"]) == 2 and len(record["samples_ms"]) == 1 and record["unit"] == "frames/s"
  # --load-disparity scores the saved disparity without matching; a stricter target makes the same result FAIL
  r2 = run_py(SCRIPT, "--quick", "--out", str(tmp_path / "again"), "--load-disparity", str(tmp_path / "disp.safetensors"),
              "--target-bad1", "0.01", env=CPU)
  assert r2.returncode == 1 and "loaded disparity" in r2.stdout and "FAIL: bad-1.0" in r2.stdout, r2.stdout + r2.stderr
  assert json.loads((tmp_path / "again" / "summary.json").read_text())["evaluation"] == summary["evaluation"]


def test_demo_on_files_with_16_bit_images_and_calibration(tmp_path, capsys):
  """--left/--right 16-bit PNGs with identity rectification maps and 16-bit ground truth: the matcher sees
  the scene (an image read as flat would give a bad-1.0 near 100 %)."""
  from PIL import Image
  left, right, gt, _ = scene("boxes")
  for name, img in (("l.png", left), ("r.png", right)): Image.fromarray(np.round(img * 257).astype(np.uint16)).save(tmp_path / name)
  Image.fromarray(np.round(gt * 256).astype(np.uint16)).save(tmp_path / "gt.png")
  y, x = np.mgrid[0:48, 0:80].astype(np.float32)
  np.savez(tmp_path / "calib.npz", Q=dm.Calibration.from_focal_baseline(60.0, 0.06, 48, 80).Q, map1x=x, map1y=y, map2x=x, map2y=y)
  rc = dm.main(["--left", str(tmp_path / "l.png"), "--right", str(tmp_path / "r.png"), "--calib", str(tmp_path / "calib.npz"), "--gt",
                str(tmp_path / "gt.png"), "--gt-scale", "256", "--max-disp", "16", "--repeat", "1", "--aggregation", "box",
                "--out", str(tmp_path / "o")])
  out = capsys.readouterr().out
  assert rc == 0 and "PASS: bad-1.0 (all pixels with known ground truth)" in out, out
  assert json.loads((tmp_path / "o" / "summary.json").read_text())["evaluation"]["bad1.0_pct"] < 14


@pytest.mark.slow
def test_bench_quick_json_validates(tmp_path):
  from common.bench import validate
  r = run_py(SCRIPT, "--bench", "--quick", "--size", "64x48", "--json", str(tmp_path / "b.json"), env=CPU)
  assert r.returncode == 0, r.stdout + r.stderr
  records = validate(json.loads((tmp_path / "b.json").read_text()))
  cases = [x["case"] for x in records]
  assert any("SGM" in c for c in cases) and any("box" in c for c in cases) and any(c.startswith("SAD 5x5") for c in cases)
  assert all(x["unit"] == "frames/s" and x["value"] > 0 for x in records)
  assert any("eval_bad1.0_pct" in x for x in records)


# ---- calibration (OpenCV, optional) and the PyTorch reference (optional) --------------------------------

def run_without(module, script, *args):
  """Run a script as if `module` were not installed."""
  path = str(ROOT / script)
  code = (f"import sys, runpy; sys.modules[{module!r}] = None; sys.argv = [{path!r}, *{list(map(str, args))!r}]; "
          f"runpy.run_path({path!r}, run_name='__main__')")
  env = {**os.environ, "DEV": "CPU", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'stereo'}"}
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("module,script,args", [("cv2", CALIB, ["--synthetic"]), ("torch", TORCH_REF, ["--quick"])])
def test_optional_extras_absent_is_one_line_exit_2(module, script, args, tmp_path):
  r = run_without(module, script, *args, *(["--out", tmp_path] if script == CALIB else []))
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "pip install" in r.stderr, r.stderr


@pytest.mark.skipif(not HAVE_CV2, reason="opencv-python-headless not installed")
def test_calibration_recovers_synthetic_rig_writes_into_out_and_reads_from_files(tmp_path):
  import cv2
  r = run_py(CALIB, "--synthetic", "--views", "10", "--out", str(tmp_path / "run"), env=CPU)
  assert r.returncode == 0 and "PASS: baseline error" in r.stdout and "per-view reprojection error" in r.stdout, r.stdout + r.stderr
  Q, maps = sf.load_calibration(str(tmp_path / "run" / "calib.npz"), 480, 640)        # --out is a folder, as everywhere else
  calib = dm.Calibration(Q, maps)
  assert calib.baseline_m == pytest.approx(0.06, abs=1e-3) and calib.focal_px == pytest.approx(700, rel=0.02)
  with pytest.raises(common.UserError, match="made for 640x480"): sf.load_calibration(str(tmp_path / "run" / "calib.npz"), 48, 64)
  img = rng.uniform(0, 255, (480, 640)).astype(np.float32)       # the numpy remap depth_map.py applies equals OpenCV's
  ours = sf.remap_bilinear(img, maps[0], maps[1])
  theirs = cv2.remap(img, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  inside = (maps[0] >= 0) & (maps[0] <= 638) & (maps[1] >= 0) & (maps[1] <= 478)
  np.testing.assert_allclose(ours[inside], theirs[inside], atol=0.2)
  # the documented --left-glob/--right-glob command, on the rendered views saved as 16-bit PNGs
  import calibrate_stereo as cs
  from PIL import Image
  pairs, _ = cs.render_synthetic_views(cv2, (9, 6), 0.025, 6, 0)
  for k, (a, b) in enumerate(pairs):
    Image.fromarray(a.astype(np.uint16) * 257).save(tmp_path / f"left_{k}.png")
    Image.fromarray(b).save(tmp_path / f"right_{k}.png")
  r = run_py(CALIB, "--left-glob", str(tmp_path / "left_*.png"), "--right-glob", str(tmp_path / "right_*.png"), "--out", str(tmp_path / "files"),
             env=CPU)
  import re
  assert r.returncode == 0 and (tmp_path / "files" / "calib.npz").is_file(), r.stdout + r.stderr
  assert abs(float(re.search(r"baseline ([0-9.]+) mm", r.stdout).group(1)) - 60) < 1, r.stdout     # 16-bit left views read by their range


@pytest.mark.parametrize("args,needle", [
  (["--left-glob", "{t}/none_*.png", "--right-glob", "{t}/none_*.png"], "matches no file"),
  (["--synthetic", "--board", "2x9"], "inner corners"),
  (["--synthetic", "--views", "2"], "3 to 100 views"),
  (["--synthetic", "--square-mm", "nan"], "not a finite number"),
  (["--synthetic", "--capture-size", "axb"], "WIDTHxHEIGHT"),
  (["--synthetic", "--interval", "inf"], "not a finite number"),
  (["--synthetic", "--source", "v4l2"], "camera setting for --capture"),
  (["--synthetic", "--capture", "3"], "choose one input"),
  (["--left-glob", "{t}/a*.png"], "go together"),
  (["--left-glob", "{t}/a*.png", "--right-glob", "{t}/b*.png", "--views", "5"], "goes with --synthetic"),
  (["--synthetic", "--json", "{t}/c.json"], "times nothing"),
  (["--synthetic", "--bench"], "times nothing"),
  (["--synthetic", "--out", "{t}/afile"], "not a folder"),
  (["--synthetic", "--out", "/sys/calib"], "cannot be written"),
  (["--synthetic", "--seed", "-3"], "--seed"),
])
def test_calibration_bad_input(tmp_path, capsys, monkeypatch, args, needle):
  import calibrate_stereo as cs
  (tmp_path / "afile").write_text("x")
  assert needle in refused(capsys, monkeypatch, cs.main, *[a.format(t=tmp_path) for a in args])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_torch_reference_agrees(tmp_path):
  from common.bench import validate
  r = run_py(TORCH_REF, "--quick", "--json", str(tmp_path / "t.json"), env=CPU)
  assert r.returncode == 0 and "100.00 %" in r.stdout, r.stdout + r.stderr
  assert validate(json.loads((tmp_path / "t.json").read_text()))[0]["agreement_with_tinygrad_pct"] == 100.0


def test_occlusion_from_two_ground_truths_matches_the_renderer():
  left, right, gt, occ = scene("boxes")
  y, x = np.mgrid[0:48, 0:80].astype(np.float64)
  gt_right, _ = sc.visible(sc.make_scene("boxes", 48, 80, 16, 3), x, y, right_view=True)
  ones = np.ones_like(occ)
  derived = dm.occlusion_from_ground_truth(gt, ones, gt_right.astype(np.float32), ones)
  assert occ.sum() > 100 and (derived == occ).mean() > 0.98
