"""The one door between the backend and the kernel: open, ioctl, mmap, munmap, close (plus the doorbell store).

Every byte the backend exchanges with nvgpu/nvmap goes through the object returned by `get_io()`. On a Jetson that is
`LinuxIO` (libc calls through ctypes). With TEGRA_FAKE=1 in the environment it is `backend.testing.fake_driver.FakeTegra`,
the fake Orin (tests also install one with `set_io()`). Nothing here imports tinygrad.
"""
from __future__ import annotations
import ctypes, ctypes.util, errno, mmap, os, platform, struct

class LinuxIO:
  """Real device I/O. ioctl goes through libc rather than fcntl.ioctl because nvmap handles have bit 31 set and
  fcntl.ioctl parses an int argument as a signed C int (OverflowError); libc takes an unsigned long."""
  name = "linux"

  def __init__(self):
    self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    self.libc.ioctl.argtypes, self.libc.ioctl.restype = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p], ctypes.c_int
    self.libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    self.libc.mmap.restype = ctypes.c_void_p
    self.libc.munmap.argtypes, self.libc.munmap.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_int
    self.store_barrier = make_store_barrier()

  def exists(self, path:str) -> bool: return os.path.exists(path)
  def open(self, path:str, flags:int=os.O_RDWR | os.O_CLOEXEC) -> int: return os.open(path, flags)
  def close(self, fd:int) -> None: os.close(fd)

  def ioctl(self, fd:int, request:int, arg:ctypes.Structure|int) -> int:
    ptr = ctypes.c_void_p(arg) if isinstance(arg, int) else ctypes.cast(ctypes.byref(arg), ctypes.c_void_p)
    if (ret:=self.libc.ioctl(fd, request, ptr)) < 0:
      raise OSError(err:=ctypes.get_errno(), os.strerror(err))
    return ret

  def mmap(self, fd:int, size:int, offset:int=0) -> int:
    # never MAP_FIXED: the kernel picks the CPU address (GPU VA and CPU VA differ on Tegra)
    addr = self.libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, offset)
    if addr is None or addr == ctypes.c_void_p(-1).value: raise OSError(err:=ctypes.get_errno(), os.strerror(err))
    return addr

  def munmap(self, addr:int, size:int) -> None:
    if self.libc.munmap(addr, size) != 0: raise OSError(err:=ctypes.get_errno(), os.strerror(err))

  def l4t_release(self) -> str|None:
    """The first line of /etc/nv_tegra_release ("# R36 (release), REVISION: 4.4, ..."), None where there is none."""
    try:
      with open("/etc/nv_tegra_release") as f: return f.readline().strip()
    except OSError: return None

  def doorbell(self, usermode_addr:int, offset:int, token:int) -> None:
    """Ring a channel's doorbell. The ring entry and GP_PUT were written to write-combined memory just before; the
    store barrier drains them so the GPU never sees the doorbell before the work it announces."""
    self.store_barrier()
    ctypes.c_uint32.from_address(usermode_addr + offset).value = token

def make_store_barrier():
  """Return a callable that executes a real store barrier: `dsb st` on arm64, `sfence` on x86-64.

  tinygrad's System.memory_barrier is a no-op when libatomic is missing, and a C11 fence compiles to `dmb ish`, which does
  not order stores to the GPU's uncached doorbell page. We place the two instructions in an anonymous page, flip it to
  read+exec (on arm64 Linux makes instruction and data caches agree when a page becomes executable; we also call
  libgcc's __clear_cache when it is available) and call it through ctypes (~0.3 us)."""
  code = {"aarch64": struct.pack("<II", 0xD5033E9F, 0xD65F03C0),   # dsb st ; ret
          "arm64": struct.pack("<II", 0xD5033E9F, 0xD65F03C0),
          "x86_64": bytes([0x0F, 0xAE, 0xF8, 0xC3]),                 # sfence ; ret
          "AMD64": bytes([0x0F, 0xAE, 0xF8, 0xC3])}.get(platform.machine())
  if code is None: raise RuntimeError(f"no store barrier for {platform.machine()}")
  page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
  page.write(code)
  addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
  libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
  if libc.mprotect(addr, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
    raise OSError(ctypes.get_errno(), "mprotect(PROT_EXEC) for the store barrier failed")
  try:
    clear_cache = ctypes.CDLL("libgcc_s.so.1").__clear_cache
    clear_cache(ctypes.c_void_p(addr), ctypes.c_void_p(addr + len(code)))
  except (OSError, AttributeError): pass
  fn = ctypes.CFUNCTYPE(None)(addr)
  fn._keepalive = page  # the mapping must outlive the function pointer
  return fn

_io:LinuxIO|None = None
def get_io():
  """The active device I/O object (created on first use)."""
  global _io
  if _io is None:
    if os.environ.get("TEGRA_FAKE") == "1":
      from backend.testing.fake_driver import FakeTegra
      _io = FakeTegra()
    else: _io = LinuxIO()
  return _io

def set_io(io) -> None:
  """Install a device I/O object (the fake driver in tests). Must happen before the device is opened."""
  global _io
  _io = io

def errno_name(e:OSError) -> str: return errno.errorcode.get(e.errno or 0, str(e.errno))
