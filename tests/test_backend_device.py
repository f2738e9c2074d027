"""tinygrad's public API on DEV=TEGRA+NV, with the fake nvgpu/nvmap driver underneath (backend.testing.fake_driver).

Each scenario runs in a fresh interpreter: a tinygrad device is opened once per process and caches global state, and the
rest of the repository's tests must not see an NV device. The fake GPU runs tinygrad's kernels with its Python
emulator, so results are checked against numpy; QMDs and semaphore releases are checked too.
"""
import os, subprocess, sys, textwrap
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRELUDE = """
import os, numpy as np
from backend.testing.fake_driver import FakeTegra
fake = FakeTegra().install()
import backend; backend.install()
from tinygrad import Tensor, Device, TinyJit, dtypes
"""

def run(body:str, prelude:str=PRELUDE, timeout:int=120, **env) -> str:
  e = {**os.environ, "DEV": "TEGRA+NV", "PARALLEL": "0", "HCQDEV_WAIT_TIMEOUT_MS": "5000", "PYTHONPATH": ROOT, **env}
  p = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  return p.stdout

def test_device_opens_with_tegra_interface_and_bringup_order():
  out = run("""
    d = Device["NV"]
    assert type(d).__name__ == "NVDevice" and type(d.iface).__name__ == "TEGRAIface", type(d.iface)
    assert d.arch == "sm_87", d.arch
    c = fake.calls
    order = ["GET_CHARACTERISTICS", "ALLOC_AS", "AS_ALLOC_SPACE", "OPEN_TSG",
             "TSG_CREATE_SUBCONTEXT", "OPEN_CHANNEL", "AS_BIND_CHANNEL", "TSG_BIND_CHANNEL_EX",
             "CHANNEL_WDT", "CHANNEL_SETUP_BIND", "CHANNEL_ALLOC_OBJ_CTX"]
    idx = [c.index(n) for n in order]
    assert idx == sorted(idx), list(zip(order, idx))
    assert c.count("CHANNEL_SETUP_BIND") == 2   # compute + copy channel, each with its own ring
    rings = [ch.ring.size for ch in fake.channels.values()]
    assert rings == [8192, 8192], rings
    as_ = next(obj for kind, obj in fake.fds.values() if kind == "as")
    assert sorted(as_.reservations) == [(0xFD00000000, 0xFD00000000 + (1 << 30)), (0xFE00000000, 0xFE00000000 + (1 << 30))], as_.reservations
    print("OK")
  """)
  assert "OK" in out

def test_buffers_1_byte_to_256_mib_round_trip_bit_exactly_and_free():
  out = run("""
    d = Device["NV"]
    base = fake.live()
    rng = np.random.default_rng(0)
    for n in [1, 3, 4095, 4097, (2 << 20) + 5, 256 << 20]:
      x = rng.integers(0, 256, n, dtype=np.uint8)
      t = Tensor(x, device="NV").realize()
      y = t.numpy()
      assert y.dtype == np.uint8 and np.array_equal(x, y), n
      del t
    d.allocator.free_cache()
    assert fake.live() == base, (fake.live(), base)
    assert fake.copies > 2 * 128   # the 256 MiB went through the copy engine in 2 MiB staging chunks both ways
    d.finalize()
    assert fake.live() == {"handles": 0, "cpu_mappings": 0, "fds": 0, "gpu_mappings": 0}, fake.live()
    print("OK")
  """, timeout=300)
  assert "OK" in out

@pytest.mark.slow
def test_jit_graph_replays_1000_times_with_every_signal_in_order():
  out = run("""
    d = Device["NV"]
    a, b = Tensor.empty(4, 4).realize(), Tensor.empty(4, 4).realize()
    @TinyJit
    def step(a, b):
      x = a
      for i in range(6): x = (x @ b).relu() + i   # several kernels per replay
      return x
    for _ in range(3): step(a, b)
    d.synchronize()
    tl, start, n0 = d.timeline_signal.value_addr, d.timeline_value, len(fake.launches)
    mark = len(fake.releases)
    for _ in range(1000): step(a, b)
    d.synchronize()
    seen = [v for addr, v in fake.releases[mark:] if addr == tl]
    assert seen == list(range(start, d.timeline_value)), (seen[:5], start, d.timeline_value)
    assert len(seen) >= 1000
    launches = fake.launches[n0:]
    assert len(launches) >= 6 * 1000, len(launches)
    assert all(l["qmd_releases"] == [0, 0] for l in launches)   # signals come from pushbuffer semaphores, never QMD releases
    assert all(1 <= l["block"][0] * l["block"][1] * l["block"][2] <= 1024 for l in launches)
    assert all(ch.error is None for ch in fake.channels.values())
    print("OK", len(seen), len(launches))
  """, timeout=300)
  assert "OK" in out

def test_10000_alloc_free_cycles_leak_nothing():
  out = run("""
    from tinygrad.device import Buffer
    d = Device["NV"]
    base = fake.live()
    for i in range(10000):
      b = Buffer("NV", 1 + (i * 4099) % (1 << 20), dtypes.uint8).allocate()
      b.deallocate()
    assert fake.live() == base, (fake.live(), base)
    d.finalize()
    assert fake.live() == {"handles": 0, "cpu_mappings": 0, "fds": 0, "gpu_mappings": 0}, fake.live()
    print("OK")
  """, LRU="0", timeout=300)
  assert "OK" in out

def test_missing_node_is_named():
  out = run("""
    from backend.testing.fake_driver import FakeTegra, CTRL_PATH
    FakeTegra(nodes=(CTRL_PATH,), thread=False).install()
    import backend
    try: backend.install()
    except RuntimeError as e: print("ERR", e)
  """, prelude="")
  assert "ERR Tegra device node /dev/nvmap is missing" in out

def test_without_nodes_dev_tegra_names_the_missing_node():
  # the real I/O object on this machine (no Jetson): install() refuses, and tinygrad's interface selection says why
  out = run("""
    import backend
    try: backend.install()
    except RuntimeError as e: print("INSTALL", e)
    from backend import tegra
    from tinygrad.runtime import ops_nv
    ops_nv.NVDevice = tegra.NVDevice
    from tinygrad import Device
    try: Device["NV"]
    except Exception as e: print("OPEN", e)
  """, prelude="")
  assert "INSTALL Tegra device node /dev/nvgpu/igpu0/ctrl is missing" in out
  assert "OPEN Tegra device node /dev/nvgpu/igpu0/ctrl is missing" in out

@pytest.mark.parametrize("inject,expect", [
  ("NVMAP_ALLOC:ENOMEM", "MemoryError Allocation of 1.00 MB failed on NV. Used: 0 B | MemoryError NVMAP_IOC_ALLOC(0x100000): out of GPU memory"),
  ("AS_MAP_BUFFER_EX:ENOMEM",
   "MemoryError Allocation of 1.00 MB failed on NV. Used: 0 B | MemoryError AS MAP_BUFFER_EX(0x100000): out of GPU memory"),
  ("NVMAP_ALLOC:EINVAL", "TegraError NVMAP_IOC_ALLOC(0x100000) failed with EINVAL: the driver rejected the arguments"),
  ("AS_MAP_BUFFER_EX:EBUSY", "TegraError AS MAP_BUFFER_EX(0x100000) failed with EBUSY: the GPU or this resource is in use"),
])
def test_driver_errors_reach_the_user_clearly_and_leak_nothing(inject, expect):
  name, code = inject.split(":")
  out = run(f"""
    import errno
    d = Device["NV"]
    base = fake.live()
    from tinygrad.device import Buffer
    fake.inject["{name}"] = [errno.{code}] * 3   # tinygrad's LRU allocator retries once after a MemoryError
    try: Buffer("NV", 1 << 18, dtypes.float32).allocate()
    except Exception as e: print(type(e).__name__, e, *(["|", type(e.__cause__).__name__, e.__cause__] if e.__cause__ else []), flush=True)
    d.finalize()   # a handle or fd left by the failed step would not be known to the device and would survive this
    assert fake.live() == dict(handles=0, cpu_mappings=0, fds=0, gpu_mappings=0), fake.live()
  """)
  assert expect in out, out

def test_device_busy_at_open_is_explained():
  out = run("""
    import errno
    fake.inject["OPEN_TSG"] = [errno.EBUSY]
    try: Device["NV"]
    except Exception as e: print("ERR", e)
    assert fake.live() == {"handles": 0, "cpu_mappings": 0, "fds": 0, "gpu_mappings": 0}, fake.live()
  """)
  assert "ERR OPEN_TSG failed with EBUSY" in out

def test_gpu_fault_reports_the_error_notifier_and_dmesg():
  out = run("""
    d = Device["NV"]
    ch = next(iter(fake.channels.values()))
    ch.error = "injected MMU fault"
    fake._fault(ch, ch.error)
    import time
    st = time.perf_counter()
    try: (Tensor.empty(64, device="NV") + 1).realize(); d.synchronize()
    except Exception as e: print("ERR", e)
    print("AFTER", time.perf_counter() - st)
  """, HCQDEV_WAIT_TIMEOUT_MS="30000")
  assert "ERR Tegra GPU hang: channel" in out and "error notifier info32=31" in out and "dmesg" in out
  assert float(out.split("AFTER")[1]) < 5, out   # the notifier is read while waiting: no 30 s timeout first

MLP = """
import numpy as np
from tinygrad import Tensor, TinyJit, nn
from tinygrad.nn.optim import Adam
Tensor.manual_seed(0)
rng = np.random.default_rng(0)
X, Y = Tensor(rng.standard_normal((16, 8), dtype=np.float32)), Tensor(rng.integers(0, 3, 16).astype(np.int32))
l1, l2 = nn.Linear(8, 16), nn.Linear(16, 3)
params = [l1.weight, l1.bias, l2.weight, l2.bias]
opt = Adam(params, lr=0.01)
Tensor.realize(*params)
from tinygrad.helpers import Context
@TinyJit
def step():
  opt.zero_grad()
  loss = l2(l1(X).relu()).sparse_categorical_crossentropy(Y).backward()
  opt.step()
  return loss.realize()
with Context(TRAINING=1): print("LOSSES", [step().item() for _ in range(20)])
"""

@pytest.mark.slow
def test_two_layer_mlp_trained_20_adam_steps_in_a_tinyjit_matches_the_cpu():
  """The kernels run on the fake Orin's GPU (Python emulator over the fake's memory, launched through QMDs), the data
  moves through its copy engine; the losses must be the CPU device's to rtol 1e-4."""
  import numpy as np
  fake = run(MLP + "print('FAKE_KERNELS', fake.kernels_run)\n", timeout=600)
  cpu = run(MLP, prelude="", DEV="CPU")
  def losses(out:str) -> list[float]: return eval(out.split("LOSSES")[1].splitlines()[0])
  assert int(fake.split("FAKE_KERNELS")[1].split()[0]) >= 20 * 5, fake   # every step's kernels ran on the fake GPU
  np.testing.assert_allclose(losses(fake), losses(cpu), rtol=1e-4)
  assert losses(cpu)[-1] < losses(cpu)[0]

def test_error_notifier_refused_is_a_warning_and_the_device_works():
  out = run("""
    import errno
    fake.inject["CHANNEL_SET_ERROR_NOTIFIER"] = [errno.EINVAL] * 2
    print("SUM", (Tensor([1.0, 2.0, 3.0], device="NV") * 2).sum().item())
  """)
  assert "SUM 12.0" in out

@pytest.mark.parametrize("step", ["ALLOC_AS", "AS_ALLOC_SPACE", "TSG_BIND_CHANNEL_EX", "CHANNEL_SETUP_BIND"])
def test_a_failed_open_leaks_no_fd_or_buffer(step):
  out = run(f"""
    import errno
    fake.inject["{step}"] = [errno.EINVAL]
    try: Device["NV"]
    except Exception as e: print("ERR", type(e).__name__)
    print("LIVE", fake.live())
  """)
  assert "ERR" in out and "LIVE {'handles': 0, 'cpu_mappings': 0, 'fds': 0, 'gpu_mappings': 0}" in out, out

def test_another_l4t_release_is_named_in_one_line():
  out = run("""
    fake.release = "# R35 (release), REVISION: 4.1, GCID: 1"
    try: Device["NV"]
    except Exception as e: print("ERR", e)
  """)
  assert "L4T R35 found (R35 (release)); this backend needs L4T r36 (JetPack 6)" in out, out

def test_ring_wraps_when_the_gpu_never_writes_gp_get_back():
  """1500 submissions on a 1024-entry ring while USERD's GP_GET stays at 0: the ring-space wait must trust the timeline."""
  out = run("""
    fake.gpget_writeback_every = 1 << 30
    d = Device["NV"]
    for _ in range(1500): d.hw_compute_queue_t().signal(d.timeline_signal, d.next_timeline()).submit(d)
    d.synchronize()
    print("OK", d.timeline_signal.value, d.compute_gpfifo.put_value)
  """)
  assert "OK" in out and int(out.split()[-1]) > 1024

def test_graph_replays_with_a_changing_variable_and_fresh_inputs_match_numpy():
  """Kernel arguments and staging buffers change on every call: stale GPU copies of either (CACHEABLE on CPU-written
  memory) would give wrong numbers here."""
  out = run("""
    from tinygrad import Variable
    @TinyJit
    def f(x, n): return (x[:n] * 3 + 1).sum().realize()
    v = Variable("n", 1, 16)
    for i in range(12):
      xs = np.arange(16, dtype=np.float32) + i
      n = 1 + (i * 5) % 16
      got = f(Tensor(xs, device="NV").realize(), v.bind(n)).item()
      assert got == float((xs[:n] * 3 + 1).sum()), (i, n, got)
    assert fake.launches and all(l["qmd_releases"] == [0, 0] for l in fake.launches)   # signals never ride on a QMD (pitfall 3)
    print("OK")
  """)
  assert "OK" in out

def test_startup_hook_line_reaches_the_backend_without_import_common():
  from backend._startup import PTH_LINE
  code = PTH_LINE + "from tinygrad import Tensor; print((Tensor([1,2,3])+1).tolist())"
  for flags in ({"DEV": "NV"}, {"NV": "1"}):
    env = {k: v for k, v in os.environ.items() if k != "DEV"}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "TEGRA_FAKE": "1", "PARALLEL": "0", "PYTHONPATH": ROOT, **flags},
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.strip().splitlines()[-1:] == ["[2, 3, 4]"], (flags, p.stdout, p.stderr[-2000:])

def test_startup_hook_costs_a_stat_and_imports_nothing_elsewhere():
  if os.path.exists("/dev/nvgpu/igpu0/ctrl"): pytest.skip("a Jetson: the hook is meant to act here")
  from backend._startup import PTH_LINE
  # the best of 5 runs: one run on a loaded 2-core machine can be descheduled for milliseconds
  code = ("import sys, time\nts = []\nfor _ in range(5):\n  st = time.perf_counter()\n  exec(" + repr(PTH_LINE) + ")\n"
          "  ts.append(time.perf_counter() - st)\nprint(min(ts), sorted(m for m in sys.modules if m.startswith(('tinygrad', 'backend', 'common'))))")
  env = {k: v for k, v in os.environ.items() if k not in ("TEGRA_FAKE", "DEV")}
  p = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60)
  seconds, modules = p.stdout.split(" ", 1)
  assert modules.strip() == "[]" and p.stderr == "", p.stdout + p.stderr
  assert float(seconds) < 5e-3
