"""The benchmark harness: statistics, warm-up separation, the JSON schema, and the comparison runner."""
import json
import numpy as np
import pytest
import common  # noqa: F401  (settles DEV before tinygrad)
from common.bench import Bench, Timing, percentile, time_fn, validate, markdown_table, SCHEMA
from common.compare import comparison_table, speedup
from conftest import run_py, assert_one_line_error


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy(n, q):
  xs = list(np.random.default_rng(n).exponential(size=n))
  assert percentile(xs, q) == pytest.approx(np.percentile(xs, q), rel=1e-12)


def test_percentile_of_nothing_is_an_error():
  with pytest.raises(ValueError): percentile([], 50)


def fake_clock_fn(durations):
  """A function whose calls 'take' the given durations on a fake clock, and that clock."""
  state = {"t": 0.0, "i": 0}
  def clock(): return state["t"]
  def fn():
    state["t"] += durations[min(state["i"], len(durations) - 1)]
    state["i"] += 1
  return fn, clock


def test_time_fn_keeps_warmup_apart(monkeypatch):
  import common.bench as b
  # 3 warm-up calls of 1 s (compile, JIT capture) then steady calls of 10 ms
  fn, clock = fake_clock_fn([1.0, 1.0, 1.0] + [0.01] * 100)
  monkeypatch.setattr(b.time, "perf_counter", clock)
  syncs = []
  t = time_fn(fn, warmup=3, iters=20, sync=lambda: syncs.append(1))
  assert t.warmup_s == [1.0, 1.0, 1.0]
  assert len(t.samples_s) == 20 and t.median == pytest.approx(0.01)
  assert len(syncs) == 1 + 3 + 20          # once before, then after every call


def test_time_fn_max_seconds_stops_slow_cases(monkeypatch):
  import common.bench as b
  fn, clock = fake_clock_fn([2.0] * 100)
  monkeypatch.setattr(b.time, "perf_counter", clock)
  t = time_fn(fn, warmup=0, iters=50, max_seconds=5, sync=lambda: None)
  assert len(t.samples_s) == 3


def test_record_fields_and_throughput():
  bench = Bench("unit", device="FAKE", renderer="FakeRenderer")
  t = Timing(warmup_s=[0.5], samples_s=[0.002, 0.004, 0.003])
  rec = bench.add("case a", t, rate=(64, "clips/s"), peak_mem_bytes=123)
  assert rec["metric"] == "throughput" and rec["value"] == pytest.approx(64 / 0.003) and rec["unit"] == "clips/s"
  assert rec["median_ms"] == pytest.approx(3.0) and rec["warmup_ms"] == [500.0] and rec["peak_mem_bytes"] == 123
  lat = bench.add("case b", t)
  assert lat["metric"] == "latency" and lat["value"] == pytest.approx(3.0) and lat["unit"] == "ms"
  assert "| case a |" in markdown_table(bench.records) and "clips/s" in markdown_table(bench.records)


def test_record_says_whether_tf32_was_allowed_where_it_was_timed():
  # the model zoo times its TF32 cases inside Context(ALLOW_TF32=1), not with the variable set
  from tinygrad.helpers import Context
  bench = Bench("unit", device="FAKE", renderer="FakeRenderer")
  t = Timing(warmup_s=[0.5], samples_s=[0.002])
  with Context(ALLOW_TF32=1): tf32 = bench.add("tf32 case", t)
  assert tf32["allow_tf32"] == 1 and bench.add("fp32 case", t)["allow_tf32"] == 0


def test_json_roundtrip_validates(tmp_path):
  bench = Bench("unit", device="FAKE", renderer="FakeRenderer")
  bench.add("x", Timing([0.1], [0.001, 0.002]), rate=(1, "it/s"))
  p = tmp_path / "b.json"
  bench.write_json(p)
  doc = json.loads(p.read_text())
  assert doc["schema"] == SCHEMA
  recs = validate(doc)
  assert recs[0]["project"] == "unit" and recs[0]["tinygrad"] == "0.14.0" and recs[0]["beam"] == 0


@pytest.mark.parametrize("mutate,msg", [(lambda d: d.update(schema="other"), "not a bench document"),
                                        (lambda d: d["records"][0].pop("unit"), "missing 'unit'"),
                                        (lambda d: d["records"][0].update(value="fast"), "'value' has type str"),
                                        (lambda d: d["records"][0].update(samples_ms=[]), "no samples"),
                                        (lambda d: d["records"][0].update(p99_ms=0.0), "percentiles out of order")])
def test_validate_rejects_bad_documents(mutate, msg):
  bench = Bench("unit", device="FAKE", renderer="R")
  bench.add("x", Timing([0.1], [0.001, 0.002, 0.003]))
  doc = {"schema": SCHEMA, "records": [dict(r) for r in bench.records]}
  mutate(doc)
  with pytest.raises(ValueError, match=msg): validate(doc)


def test_time_fn_on_real_device_synchronizes():
  from tinygrad import Tensor, TinyJit
  x = Tensor.rand(256).realize()
  f = TinyJit(lambda t: (t * 2).realize())
  t = time_fn(lambda: f(x), warmup=2, iters=5)
  assert len(t.warmup_s) == 2 and len(t.samples_s) == 5 and all(s > 0 for s in t.samples_s)


def test_speedup_direction():
  def thr(v): return {"metric": "throughput", "unit": "GB/s", "value": v}
  def lat(v): return {"metric": "latency", "unit": "ms", "value": v}
  assert speedup(thr(10), thr(30)) == pytest.approx(3.0)
  assert speedup(lat(3.0), lat(1.0)) == pytest.approx(3.0)
  assert speedup(thr(1), lat(1)) is None


def test_comparison_table_ratios():
  def rec(case, v, unit="GB/s", metric="throughput"): return {"case": case, "value": v, "unit": unit, "metric": metric}
  table = comparison_table({"NV": [rec("copy", 100.0), rec("launch", 1.0, "ms", "latency")],
                            "CUDA": [rec("copy", 50.0), rec("launch", 2.0, "ms", "latency")]})
  assert "| copy | GB/s | 100 | 50 | 2.00× slower |" in table
  assert "| launch | ms | 1 | 2 | 2.00× slower |" in table


def test_compare_runner_on_cpu_with_tiny_script(tmp_path):
  out = tmp_path / "cmp.json"
  r = run_py("-m", "common.compare", "tests/fixtures/tiny_bench.py", "--backends", "CPU,PYTHON,CUDA", "--json", str(out))
  assert r.returncode == 0, r.stderr
  assert "skipped CUDA" in r.stdout                       # no GPU here: skipped with its reason
  assert "| add one | elements/s |" in r.stdout and "PYTHON vs CPU" in r.stdout
  doc = json.loads(out.read_text())
  assert set(doc) == {"CPU", "PYTHON"}
  assert {rec["device"] for rec in doc["CPU"]} == {"CPU"} and {rec["device"] for rec in doc["PYTHON"]} == {"PYTHON"}


def test_compare_runner_bad_input():
  assert_one_line_error(run_py("-m", "common.compare", "no/such/script.py", "--backends", "CPU"), "no such file")
  assert_one_line_error(run_py("-m", "common.compare", "tests/fixtures/tiny_bench.py", "--timeout", "nan"), "--timeout")
  assert_one_line_error(run_py("-m", "common.compare", "tests/fixtures/tiny_bench.py", "--json", "/proc/x.json"), "cannot be written")


def test_device_bench_quick_writes_valid_json(tmp_path):
  p = tmp_path / "d.json"
  r = run_py("-m", "common.device", "--bench", "--quick", "--json", str(p), env={"CPU": "1"})
  assert r.returncode == 0, r.stderr
  recs = validate(json.loads(p.read_text()))
  cases = {rec["case"] for rec in recs}
  assert {"matmul fp32 128", "matmul fp16 256", "copy b=2a", "triad a=b+s*c", "launch latency (1 kernel, JIT)", "JIT replay (16 kernels)"} <= cases
  assert all(rec["value"] > 0 for rec in recs)
