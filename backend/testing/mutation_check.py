"""Does the test suite notice when the backend is wrong? Apply one deliberate fault at a time and run the backend tests.

  python3 -m backend.testing.mutation_check            # all faults; prints a table, exits 1 if fewer than 11 are caught
  python3 -m backend.testing.mutation_check --only 3   # one fault

Each fault is a single textual change to one backend file, made in a throw-away copy of backend/, common/ and the backend
tests (never in the working tree). A fault is caught when at least one test fails; the table names the first failing
test. The faults are the mistakes the issue tracker worried about plus a few of our own.
"""
import argparse, os, re, shutil, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = ["tests/test_backend_device.py", "tests/test_backend_fake_driver.py", "tests/test_backend_uapi.py", "tests/test_backend_selftest.py"]

AS_BIND = '    self._ioctl(self.as_fd, U.NVGPU_AS_IOCTL_BIND_CHANNEL, U.nvgpu_as_bind_channel_args(channel_fd=fd), "AS BIND_CHANNEL")\n'
TSG_BIND = ('    self._ioctl(self.objects[tsg_handle][1], U.NVGPU_TSG_IOCTL_BIND_CHANNEL_EX, '
            'U.nvgpu_tsg_bind_channel_ex_args(channel_fd=fd, subcontext_id=veid),\n                "TSG BIND_CHANNEL_EX")\n')

# (what the fault is, file, text to find, replacement)
FAULTS = [
  ("wrong field offset: work_submit_token swapped with gpfifo_dmabuf_fd in SETUP_BIND's struct", "backend/uapi.py",
   '("gpfifo_dmabuf_fd", s32),\n              ("work_submit_token", u32)', '("work_submit_token", u32),\n              ("gpfifo_dmabuf_fd", s32)'),
  ("wrong flag: USERMODE_SUPPORT as 1 << 2", "backend/uapi.py",
   "NVGPU_CHANNEL_SETUP_BIND_FLAGS_USERMODE_SUPPORT = 1 << 1, 1 << 3", "NVGPU_CHANNEL_SETUP_BIND_FLAGS_USERMODE_SUPPORT = 1 << 1, 1 << 2"),
  ("ioctls out of order: TSG BIND_CHANNEL_EX before AS BIND_CHANNEL", "backend/tegra.py", AS_BIND + TSG_BIND, TSG_BIND + AS_BIND),
  ("CACHEABLE on kernel arguments (every buffer the CPU writes)", "backend/tegra.py",
   "if gpu_only and GPU_CACHEABLE else 0", "if not uncached else 0"),
  ("missing store barrier between the GPFIFO entry and GP_PUT", "backend/tegra.py",
   "    dev.iface.store_barrier()   # the entry", "    pass   # the entry"),
  ("missing VA reservation of the shared-memory window", "backend/tegra.py", "for window in (LOCAL_MEM_WINDOW, SHARED_MEM_WINDOW):",
   "for window in (LOCAL_MEM_WINDOW,):"),
  ("wrong doorbell offset (0x8C instead of 0x90)", "backend/uapi.py", "USERMODE_DOORBELL_OFFSET = 0x90", "USERMODE_DOORBELL_OFFSET = 0x8C"),
  ("wrong GPFIFO entry length field (shift 40 instead of 42)", "backend/tegra.py", "(len(self._q) << 42)", "(len(self._q) << 40)"),
  ("stale GP_GET trusted: no timeline check in the ring-space wait", "backend/tegra.py",
   "      if dev.timeline_signal.value >= gpfifo.last_timeline: break\n", ""),
  ("QMD-embedded release used for signals (pitfall 3)", "backend/tegra.py",
   "    self.active_qmd = None\n    return super().signal", "    return super().signal"),
  ("error notifier made mandatory again", "backend/tegra.py", "    except (TegraError, MemoryError) as e:", "    except ZeroDivisionError as e:"),
  ("fd leak: a failed open does not release what it opened", "backend/tegra.py", "      self.device_fini()   # every fd", "      pass   # every fd"),
  ("ENOMEM not translated into MemoryError", "backend/tegra.py",
   "if e.errno == errno.ENOMEM: raise MemoryError", "if e.errno == -1: raise MemoryError"),
  ("waits sleep instead of reading the notifier", "backend/tegra.py",
   "    if (report:=self.read_error_notifier()): raise TegraError(hang_message(report))\n    time.sleep(0.001)",
   "    time.sleep(ms / 1000)"),
]

def run_fault(i:int, timeout:int) -> tuple[bool, str]:
  what, path, find, repl = FAULTS[i]
  with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
    for d in ("backend", "common"): shutil.copytree(os.path.join(ROOT, d), os.path.join(tmp, d), ignore=shutil.ignore_patterns("__pycache__"))
    os.makedirs(os.path.join(tmp, "tests"))
    for t in TESTS + ["tests/conftest.py"]: shutil.copy(os.path.join(ROOT, t), os.path.join(tmp, t))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp)
    src = open(os.path.join(tmp, path)).read()
    if src.count(find) != 1: return False, f"(fault not applicable: the text occurs {src.count(find)} times)"
    with open(os.path.join(tmp, path), "w") as f: f.write(src.replace(find, repl))
    env = {k: v for k, v in os.environ.items() if k not in ("DEV", "TEGRA_FAKE")}
    cmd = [sys.executable, "-m", "pytest", "-n", "0", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", *TESTS]
    try: p = subprocess.run(cmd, cwd=tmp, env={**env, "PYTHONPATH": tmp}, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired: return True, "(suite timed out: a hang)"
    failed = re.findall(r"^FAILED (\S+)", p.stdout, re.M) or re.findall(r"^ERROR (\S+)", p.stdout, re.M)
    return p.returncode != 0, (failed[0] if failed else ("(collection error)" if p.returncode else ""))

def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--only", type=int, action="append", help="fault number (1-based); repeatable")
  ap.add_argument("--timeout", type=int, default=600, help="seconds per fault")
  args = ap.parse_args()
  chosen = [n - 1 for n in args.only] if args.only else range(len(FAULTS))
  caught = 0
  print("| # | fault | caught | first failing test |\n|---|---|---|---|")
  for i in chosen:
    hit, test = run_fault(i, args.timeout)
    caught += hit
    print(f"| {i + 1} | {FAULTS[i][0]} | {'yes' if hit else 'NO'} | {test} |", flush=True)
  print(f"\n{caught} of {len(chosen)} faults caught")
  return 0 if caught >= min(11, len(chosen)) else 1

if __name__ == "__main__": sys.exit(main())
