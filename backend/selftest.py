"""`python3 -m backend.selftest`: is this Jetson's GPU usable by tinygrad through the Tegra backend?

A ladder of checks, each harder than the last; it stops at the first failure and says what probably went wrong.
  nodes -> open -> alloc/free -> copy round trip -> one kernel -> 1000 signals -> TinyJit graph -> matmul vs numpy
`--fake` runs the ladder against the fake driver (backend/fake_driver.py): the kernels do not execute there, so the
rungs that compare computed numbers are skipped (marked SKIP), everything else runs.
"""
import argparse, os, sys, time

HINTS = {
  "nodes": "not a Jetson, or nvgpu/nvmap are not loaded (`lsmod | grep nvgpu`)",
  "open": "permissions (`ls -l /dev/nvgpu/igpu0/ctrl /dev/nvmap`; add yourself to 'video') or another process holds the GPU",
  "alloc/free": "nvmap refused memory: check `free -h` and `sudo dmesg | grep -i nvmap`",
  "copy round trip": "the copy engine did not complete: `sudo dmesg | grep -iE 'nvgpu|gk20a'` for channel or MMU errors",
  "one kernel": "compiler or launch problem: is CUDA's libnvrtc/libnvJitLink installed (JetPack)? then `sudo dmesg | grep -i gr`",
  "1000 signals": "semaphore releases lost or the doorbell ignored: `sudo dmesg | grep -iE 'nvgpu|fifo'`",
  "TinyJit graph": "graph replay failed: run with DEBUG=2 and check `sudo dmesg | grep -iE 'nvgpu|mmu'`",
  "matmul vs numpy": "wrong numbers: try MATVEC_FIX=0 and JIT=0 to isolate; report with DEBUG=4 output",
}

def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--fake", action="store_true", help="run against the fake nvgpu/nvmap driver (no Jetson needed)")
  args = ap.parse_args()
  os.environ.setdefault("DEV", "TEGRA+NV")
  if args.fake:
    os.environ.setdefault("PARALLEL", "0")
    from backend.fake_driver import FakeTegra
    FakeTegra().install()
  import backend
  from backend import devio
  if (missing:=[p for p in backend.TEGRA_NODES if not devio.get_io().exists(p)]):
    print(f"FAIL nodes: {missing[0]} is missing -- {HINTS['nodes']}")
    return 1
  try: backend.install()
  except RuntimeError as e:
    print(f"FAIL install: {e}")
    return 1
  if args.fake:
    from backend.fake_driver import install_fake_compiler
    install_fake_compiler()
  import numpy as np
  from tinygrad import Tensor, Device, TinyJit, dtypes

  state:dict = {}
  def open_dev(): state["d"] = Device["NV"]; return f"{type(state['d'].iface).__name__}, {state['d'].arch}"
  def alloc_free():
    from tinygrad.device import Buffer
    for n in (1, 4096, 1 << 20, 64 << 20): Buffer("NV", n, dtypes.uint8).allocate().deallocate()
    return "1 B .. 64 MiB"
  def copy_round_trip():
    x = np.random.default_rng(0).integers(0, 256, 16 << 20, dtype=np.uint8)
    assert np.array_equal(Tensor(x, device="NV").numpy(), x), "copied data differs"
    return "16 MiB bit-exact"
  def one_kernel():
    y = (Tensor.arange(1024) * 2).realize()   # DEV=TEGRA+NV makes NV the default device
    state["d"].synchronize()
    if args.fake: return "launched (QMD accepted); value not checked: the fake GPU does not execute kernels"
    assert y.numpy()[1023] == 2046, "kernel result wrong"
    return "arange*2 correct"
  def signals():
    d = state["d"]
    for _ in range(1000): d.hw_compute_queue_t().signal(d.timeline_signal, d.next_timeline()).submit(d)
    d.synchronize()
    return f"timeline at {d.timeline_signal.value}"
  def jit_graph():
    @TinyJit
    def f(a): return ((a + 1) * 2).relu().sum()
    a = Tensor.empty(256, device="NV").realize()
    for _ in range(10): f(a)
    state["d"].synchronize()
    return "10 calls, 8 replays"
  def matmul():
    if args.fake: return "SKIP (fake GPU does not execute kernels)"
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((256, 256), dtype=np.float32), rng.standard_normal((256, 256), dtype=np.float32)
    err = np.abs((Tensor(a, device="NV") @ Tensor(b, device="NV")).numpy() - a @ b).max()
    assert err < 1e-3, f"max error {err}"
    return f"max error {err:.1e}"

  rungs = [("open", open_dev), ("alloc/free", alloc_free), ("copy round trip", copy_round_trip), ("one kernel", one_kernel),
           ("1000 signals", signals), ("TinyJit graph", jit_graph), ("matmul vs numpy", matmul)]
  print(f"PASS nodes: {', '.join(backend.TEGRA_NODES)}")
  for name, fn in rungs:
    st = time.perf_counter()
    try: detail = fn()
    except Exception as e:
      print(f"FAIL {name} ({(time.perf_counter()-st)*1e3:.0f} ms): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
      print(f"     likely cause: {HINTS[name]}")
      return 1
    print(f"{'SKIP' if detail.startswith('SKIP') else 'PASS'} {name} ({(time.perf_counter()-st)*1e3:.0f} ms): {detail}")
  return 0

if __name__ == "__main__": sys.exit(main())
