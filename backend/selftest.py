"""`python3 -m backend.selftest`: is this Jetson's GPU usable by tinygrad through the Tegra backend?

A ladder of checks, each harder than the last; it stops at the first failure, prints the error notifier's code and where
to look in dmesg. Every rung prints PASS/FAIL and its time.
  nodes -> open -> alloc/free -> copy round trip -> one kernel -> 1000 signals -> ring wrap (1500 submissions)
  -> 40 copy-ins of changing data -> TinyJit graph (changing Variable, copy inside) -> 1 GiB allocation
  -> compute vs CPU -> matmul vs numpy -> GPU L2 caching (correctness and bandwidth, flags 0 vs CACHEABLE)
`--fake` (or TEGRA_FAKE=1) runs the ladder on the fake Orin (backend/testing/fake_driver.py), which executes the kernels
with tinygrad's Python emulator: numbers are checked, times say nothing about a real GPU.
`--report PATH` writes one markdown file to paste into an issue: the ladder, the device report and microbenchmarks.
"""
import argparse, os, platform, subprocess, sys, tempfile, time

HINTS = {
  "nodes": "not a Jetson, or nvgpu/nvmap are not loaded (`lsmod | grep nvgpu`)",
  "open": "permissions (`ls -l /dev/nvgpu/igpu0/ctrl /dev/nvmap`; add yourself to 'video') or another process holds the GPU",
  "alloc/free": "nvmap refused memory: check `free -h` and `sudo dmesg | grep -i nvmap`",
  "copy round trip": "the copy engine did not complete: `sudo dmesg | grep -iE 'nvgpu|gk20a'` for channel or MMU errors",
  "one kernel": "compiler or launch problem: is CUDA's libnvrtc/libnvJitLink installed (JetPack)? then `sudo dmesg | grep -i gr`",
  "1000 signals": "semaphore releases lost or the doorbell ignored: `sudo dmesg | grep -iE 'nvgpu|fifo'`",
  "ring wrap": "GP_GET not written back or the ring-space wait stuck: `sudo dmesg | grep -iE 'nvgpu|fifo'`",
  "copy-ins": "stale staging data (GPU L2?) or a lost copy: run with TEGRA_GPU_CACHEABLE=0 and report",
  "TinyJit graph": "graph replay failed: run with DEBUG=2 and check `sudo dmesg | grep -iE 'nvgpu|mmu'`",
  "1 GiB allocation": "nvmap could not back 1 GiB: `free -h`, `sudo dmesg | grep -i nvmap`",
  "compute vs CPU": "wrong numbers: try MATVEC_FIX=0, JIT=0 and PROGRAM_CACHE=0 to isolate; report with DEBUG=4 output",
  "matmul vs numpy": "wrong numbers: try MATVEC_FIX=0, JIT=0 and PROGRAM_CACHE=0 to isolate; report with DEBUG=4 output",
  "GPU L2 caching": "CACHEABLE mappings gave wrong numbers: keep TEGRA_GPU_CACHEABLE=0 (the default) and report",
}

def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--fake", action="store_true", help="run against the fake Orin (no Jetson needed); same as TEGRA_FAKE=1")
  ap.add_argument("--report", metavar="PATH", help="write a markdown report (ladder, device report, microbenchmarks) to PATH")
  args = ap.parse_args()
  if args.report and (why := report_unwritable(args.report)): ap.exit(2, f"error: --report {args.report}: {why}\n")   # before the ladder
  os.environ.setdefault("DEV", "TEGRA+NV")
  if args.fake: os.environ["TEGRA_FAKE"] = "1"
  fake = os.environ.get("TEGRA_FAKE") == "1"
  if fake: os.environ.setdefault("PARALLEL", "0")
  lines:list[str] = []
  def say(line:str):
    print(line, flush=True)
    lines.append(line)
  result = ladder(say, fake)
  if args.report: write_report(args.report, lines, fake)
  return result

def ladder(say, fake:bool) -> int:
  import backend
  from backend import devio
  if (missing:=[p for p in backend.TEGRA_NODES if not devio.get_io().exists(p)]):
    say(f"FAIL nodes: {missing[0]} is missing -- {HINTS['nodes']}")
    return 1
  try: backend.install()
  except RuntimeError as e:
    say(f"FAIL install: {e}")
    return 1
  import numpy as np
  from tinygrad import Tensor, Device, TinyJit, dtypes, Variable
  state:dict = {}
  rng = np.random.default_rng(0)

  def open_dev():
    state["d"] = Device["NV"]
    return f"{type(state['d'].iface).__name__}, {state['d'].arch}, I/O {devio.get_io().name}"
  def alloc_free():
    from tinygrad.device import Buffer
    for n in (1, 4096, 1 << 20, 64 << 20): Buffer("NV", n, dtypes.uint8).allocate().deallocate()
    return "1 B .. 64 MiB"
  def copy_round_trip():
    x = rng.integers(0, 256, 16 << 20, dtype=np.uint8)
    assert np.array_equal(Tensor(x, device="NV").numpy(), x), "copied data differs"
    return "16 MiB bit-exact"
  def one_kernel():
    y = (Tensor.arange(64).to("NV") * 2).numpy()
    assert y[63] == 126 and np.array_equal(y, np.arange(64) * 2), "kernel result wrong"
    return "arange*2 correct"
  def signals():
    d = state["d"]
    for _ in range(1000): d.hw_compute_queue_t().signal(d.timeline_signal, d.next_timeline()).submit(d)
    d.synchronize()
    return f"timeline at {d.timeline_signal.value}"
  def ring_wrap():
    d = state["d"]
    start = d.compute_gpfifo.put_value
    for _ in range(1500): d.hw_compute_queue_t().signal(d.timeline_signal, d.next_timeline()).submit(d)
    d.synchronize()
    return f"{d.compute_gpfifo.put_value - start} submissions on a {d.compute_gpfifo.entries_count}-entry ring"
  def copy_ins():
    for i in range(40):
      x = (np.arange(256, dtype=np.float32) + i)
      got = Tensor(x, device="NV").numpy()
      assert np.array_equal(got, x), f"copy-in {i} returned stale or wrong data"
    return "40 x 1 KiB, each different, all exact"
  def jit_graph():
    @TinyJit
    def f(x, n): return (x[:n] * 3 + 1).sum().realize()
    v = Variable("n", 1, 64)
    for i in range(12):
      xs = np.arange(64, dtype=np.float32) + i
      n = 1 + (i * 7) % 64
      got = f(Tensor(xs, device="NV").realize(), v.bind(n)).item()
      assert got == float((xs[:n] * 3 + 1).sum()), f"replay {i} (n={n}): {got}"
    return "12 calls, changing Variable and fresh copy-ins, all exact"
  def big_alloc():
    from tinygrad.device import Buffer
    b = Buffer("NV", 1 << 30, dtypes.uint8).allocate()
    b.deallocate()
    return "1 GiB allocated and freed"
  def compute_vs_cpu():
    a = rng.standard_normal((33, 17), dtype=np.float32)
    out = ((Tensor(a, device="NV").exp() * 2).sum(axis=1) - 1).numpy()
    ref = ((Tensor(a, device="CPU").exp() * 2).sum(axis=1) - 1).numpy()
    err = float(np.abs(out - ref).max())
    assert err < 1e-4, f"max error {err}"
    return f"exp/sum/sub on 33x17, max error vs CPU {err:.1e}"
  def matmul():
    n = 32 if fake else 256
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    err = float(np.abs((Tensor(a, device="NV") @ Tensor(b, device="NV")).numpy() - a @ b).max())
    assert err < 1e-3, f"max error {err}"
    return f"{n}x{n} max error {err:.1e}"
  def l2_caching():
    return cacheable_comparison(fake)

  rungs = [("open", open_dev), ("alloc/free", alloc_free), ("copy round trip", copy_round_trip), ("one kernel", one_kernel),
           ("1000 signals", signals), ("ring wrap", ring_wrap), ("copy-ins", copy_ins), ("TinyJit graph", jit_graph),
           ("1 GiB allocation", big_alloc), ("compute vs CPU", compute_vs_cpu), ("matmul vs numpy", matmul), ("GPU L2 caching", l2_caching)]
  say(f"PASS nodes: {', '.join(backend.TEGRA_NODES)}")
  for name, fn in rungs:
    st = time.perf_counter()
    try: detail = fn()
    except Exception as e:
      say(f"FAIL {name} ({(time.perf_counter()-st)*1e3:.0f} ms): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
      d = state.get("d")
      report = d.iface.read_error_notifier() if d is not None and hasattr(d, "iface") and hasattr(d.iface, "read_error_notifier") else []
      say(f"     error notifier: {'; '.join(report) or 'no channel error recorded'}")
      say(f"     likely cause: {HINTS[name]}; then `sudo dmesg | grep -iE 'nvgpu|gk20a|mmu'`")
      return 1
    say(f"PASS {name} ({(time.perf_counter()-st)*1e3:.0f} ms): {detail}")
  return 0

CACHEABLE_PROBE = """
import time, numpy as np
from tinygrad import Tensor, TinyJit, Variable, Device
@TinyJit
def f(x, n): return (x[:n] * 3 + 1).sum().realize()
v = Variable("n", 1, 64)
for i in range(12):
  xs = np.arange(64, dtype=np.float32) + i
  n = 1 + (i * 7) % 64
  assert f(Tensor(xs, device="NV").realize(), v.bind(n)).item() == float((xs[:n] * 3 + 1).sum()), i
size = (1 << 16) if Device["NV"].iface.io.name == "fake" else (256 << 20)
a = Tensor.empty(size // 4, device="NV").realize()
for _ in range(2): (a + 1).realize()
Device["NV"].synchronize()
st = time.perf_counter()
for _ in range(5): (a + 1).realize()
Device["NV"].synchronize()
print("GBPS", 2 * size * 5 / (time.perf_counter() - st) / 1e9)
"""

def cacheable_comparison(fake:bool) -> str:
  """Correctness (graph replays with changing kernel arguments and staging buffers) and bandwidth of a + 1, in a fresh
  process per setting: TEGRA_GPU_CACHEABLE=0 (the default, flags 0) and =1 (CACHEABLE for GPU-only buffers)."""
  out = []
  for setting in ("0", "1"):
    env = {**os.environ, "TEGRA_GPU_CACHEABLE": setting, "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), os.environ.get("PYTHONPATH")]))}
    code = "import backend; backend.install()\n" + CACHEABLE_PROBE
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0: raise RuntimeError(f"TEGRA_GPU_CACHEABLE={setting}: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    out.append(f"={setting}: correct, {float(p.stdout.split('GBPS')[1]):.2f} GB/s")
  return "TEGRA_GPU_CACHEABLE" + "; ".join(out) + (" (fake: bandwidth means nothing)" if fake else "")

def report_unwritable(path:str) -> str|None:
  """Why `path` cannot take the report, or None: a folder, not a regular file, or no file can be made beside it."""
  if os.path.isdir(path) or path.endswith(os.sep): return "is a folder, expected a file name"
  if os.path.exists(path) and not os.path.isfile(path): return "exists and is not a regular file"
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder): return f"folder {folder} does not exist"
  try:
    fd, probe = tempfile.mkstemp(prefix=".report-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)
  except OSError as e: return f"cannot be written ({e.strerror or e})"
  return None

def write_report(path:str, lines:list[str], fake:bool):
  """One markdown file: the ladder, `python3 -m common.device` and its microbenchmarks (each in its own process)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
  def section(title, argv):
    try: p = subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired: return f"## {title}\n\n(timed out after 900 s)\n"
    return f"## {title}\n\n`python3 {' '.join(argv)}` (exit {p.returncode})\n\n```\n{(p.stdout + p.stderr).strip()}\n```\n"
  release = ""
  try:
    with open("/etc/nv_tegra_release") as f: release = f.readline().strip()
  except OSError: release = "(no /etc/nv_tegra_release)"
  text = [f"# Tegra backend self-test report{' (fake Orin)' if fake else ''}\n", f"- machine: {platform.machine()}, {platform.platform()}",
          f"- L4T: {release}", f"- python {sys.version.split()[0]}\n", "## Self-test ladder\n", "```", *lines, "```\n",
          section("Device report", ["-m", "common.device"]),
          "## Microbenchmarks\n\nnot run on the fake Orin: its kernels run in tinygrad's Python emulator, so times mean nothing.\n" if fake
          else section("Microbenchmarks", ["-m", "common.device", "--bench"])]
  fd, tmp = tempfile.mkstemp(prefix=".report-", dir=os.path.dirname(os.path.abspath(path)))     # whole or not at all
  with os.fdopen(fd, "w") as f: f.write("\n".join(text))
  os.replace(tmp, path)

if __name__ == "__main__": sys.exit(main())
