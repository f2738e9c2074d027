"""A fake nvgpu + nvmap: the Orin's GPU drivers emulated at the ioctl level, so the backend can be tested on any CPU.

It implements the same five calls as `backend.devio.LinuxIO` (open, ioctl, mmap, munmap, close, plus the doorbell store)
and follows the facts sheet (shared/docs/tegra-nvgpu-facts.md):

- nvmap handles are backed by real memory (a memfd each); GET_FD hands out a real dma-buf-like fd the caller can mmap.
- a 40-bit GPU address space with top-down placement that honours ALLOC_SPACE reservations, and a GPU-VA -> host memory
  table used by the command processor.
- TSG, subcontexts and channels, with every ordering/shape rule the real driver (or the hardware) enforces: ioctl numbers
  and sizes, aligned non-zero AS bounds, AS bind before TSG bind, watchdog disabled before SETUP_BIND, flags 0xA, zero
  dma-buf offsets, ring size rules (and a hard refusal for a ring big enough to freeze a real Orin), power-of-two entries,
  one doorbell mapping per ctrl fd, unmap before free. Each refusal raises OSError with an errno, like the kernel.
- a command processor that consumes GPFIFO entries and pushbuffers: host semaphore release/acquire, copy-engine copies
  and semaphores (real memmove between the mapped buffers), and compute launches, whose QMDs are checked for
  well-formedness (program and constant buffer mapped, grid and block sane) and whose QMD releases are performed. The
  kernels themselves do not run: there is no SM here.
- counters of live handles, mappings and fds, so tests can prove that nothing leaks.

Work is consumed synchronously when the doorbell is rung, and by a background thread that retries channels blocked on a
semaphore acquire (tinygrad's graphs release their kick-off signal from the CPU after submitting).
"""
from __future__ import annotations
import bisect, ctypes, errno, mmap, os, re, sys, threading, time
from dataclasses import dataclass, field
from backend import uapi as U

CTRL_PATH, NVMAP_PATH = "/dev/nvgpu/igpu0/ctrl", "/dev/nvmap"
VA_BITS, PAGE = 40, 0x1000
MAX_RING_BYTES = 64 << 10   # rings above this are refused: a 3 MiB ring froze a real Orin; 8 KiB is known good (facts, pitfall 1)
COMPUTE_CLASS, GPFIFO_CLASS, DMA_CLASS = 0xC7C0, 0xC76F, 0xC7B5

class GPUFault(Exception): pass

def _err(code:int, why:str) -> OSError: return OSError(code, f"{os.strerror(code)} (fake nvgpu: {why})")

@dataclass
class Handle:
  id: int
  size: int
  memfd: int
  phys: int = 0               # the fake's own mapping of the memory (the "physical" view the GPU uses)
  allocated: bool = False
  cache: int = -1
  gpu_maps: int = 0

@dataclass
class Mapping:  # one GPU VA range
  va: int
  size: int
  handle: Handle
  cacheable: bool

@dataclass
class AddressSpace:
  start: int
  end: int
  reservations: list = field(default_factory=list)  # (start, end)
  maps: list = field(default_factory=list)          # sorted by va
  channels: set = field(default_factory=set)

@dataclass
class Channel:
  fd: int
  as_: AddressSpace|None = None
  tsg: "TSG|None" = None
  wdt_enabled: bool = True
  bound: bool = False
  entries: int = 0
  ring: Handle|None = None
  userd: Handle|None = None
  token: int = 0
  classes: set = field(default_factory=set)
  notifier: tuple|None = None     # (handle, offset)
  get: int = 0
  pb: list|None = None            # the pushbuffer being executed: [dwords, position]
  sem: dict = field(default_factory=dict)
  copy: dict = field(default_factory=dict)
  objects: dict = field(default_factory=dict)   # subchannel -> class set with SET_OBJECT
  error: str|None = None

@dataclass
class TSG:
  fd: int
  veids: dict = field(default_factory=dict)  # veid -> AddressSpace
  channels: set = field(default_factory=set)

class FakeTegra:
  """Drop-in for LinuxIO. `FakeTegra().install()` makes the backend use it."""
  name = "fake"

  def __init__(self, memory_limit:int=2 << 30, nodes:tuple[str, ...]=(CTRL_PATH, NVMAP_PATH), thread:bool=True):
    self.memory_limit, self.nodes = memory_limit, set(nodes)
    self.lock = threading.RLock()
    self.fds:dict[int, tuple[str, object]] = {}      # fd -> (kind, object)
    self.handles:dict[int, Handle] = {}
    self.cpu_maps:dict[int, tuple[int, str, object]] = {}  # addr -> (size, kind, owner)
    self.channels:dict[int, Channel] = {}               # token -> channel
    self.doorbell_maps:dict[int, int] = {}              # ctrl fd -> addr
    self.releases:list[tuple[int, int]] = []            # every semaphore release (gpu va, value), in execution order
    self.launches:list[dict] = []                       # every compute launch's checked QMD fields
    self.copies = 0
    self.refusals:list[str] = []
    self.calls:list[str] = []                           # names of ioctls issued, in order
    self.inject:dict[str, list[int]] = {}               # ioctl name -> errnos to return on the next calls
    self._next_handle, self._next_token, self._used = 0x80000001, 0x100, 0
    self._names = {v: k for k, v in U.IOCTLS.items()}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._cp_loop, name="fake-gpu", daemon=True) if thread else None
    if self._thread is not None:
      sys.setswitchinterval(2e-4)   # let the command processor thread in while tinygrad busy-polls a signal
      self._thread.start()

  def install(self) -> "FakeTegra":
    from backend import devio
    devio.set_io(self)
    return self

  # ---------------- accounting ----------------
  def live(self) -> dict[str, int]:
    with self.lock:
      return {"handles": len(self.handles), "cpu_mappings": len(self.cpu_maps), "fds": len(self.fds),
              "gpu_mappings": sum(len(a.maps) for k, a in self.fds.values() if k == "as")}

  def shutdown(self):
    self._stop.set()
    if self._thread is not None: self._thread.join(timeout=1)

  # ---------------- the five calls ----------------
  def exists(self, path:str) -> bool: return path in self.nodes

  def open(self, path:str, flags:int=os.O_RDWR) -> int:
    if path not in self.nodes: raise _err(errno.ENOENT, f"no such node {path}")
    return self._new_fd("ctrl" if path == CTRL_PATH else "nvmap", None)

  def close(self, fd:int) -> None:
    with self.lock:
      if fd not in self.fds: raise _err(errno.EBADF, f"close of unknown fd {fd}")
      kind, obj = self.fds.pop(fd)
      if kind == "channel": self._channel_closed(obj)
      if kind == "ctrl" and fd in self.doorbell_maps and self.doorbell_maps[fd] in self.cpu_maps:
        pass  # a live doorbell mapping keeps working after close in Linux; it is still counted as a leak until munmap
      os.close(fd)

  def mmap(self, fd:int, size:int, offset:int=0) -> int:
    with self.lock:
      kind, obj = self._fd(fd)
      if kind == "ctrl":
        if size != U.USERMODE_PAGE_SIZE or offset != 0: raise self._refuse(errno.EINVAL, "usermode page is 64 KiB at offset 0")
        if fd in self.doorbell_maps: raise self._refuse(errno.EBUSY, "only one usermode (doorbell) mapping per ctrl fd")
        m = mmap.mmap(-1, size)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        self.doorbell_maps[fd] = addr
        self.cpu_maps[addr] = (size, "doorbell", (m, fd))
        return addr
      if kind == "nvmap": raise self._refuse(errno.ENODEV, "mmap the dma-buf fd from NVMAP_IOC_GET_FD, not the nvmap fd")
      if kind != "dmabuf": raise self._refuse(errno.ENODEV, f"cannot mmap a {kind} fd")
      h:Handle = obj
      if offset != 0 or size > h.size: raise self._refuse(errno.EINVAL, f"mmap of {size:#x}@{offset:#x} beyond a {h.size:#x} buffer")
      addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
      if addr in (None, ctypes.c_void_p(-1).value): raise _err(ctypes.get_errno(), "host mmap failed")
      self.cpu_maps[addr] = (size, "dmabuf", h)
      return addr

  def munmap(self, addr:int, size:int) -> None:
    with self.lock:
      if addr not in self.cpu_maps: raise _err(errno.EINVAL, f"munmap of unknown address {addr:#x}")
      msize, kind, owner = self.cpu_maps[addr]
      if msize != size: raise _err(errno.EINVAL, f"munmap size {size:#x} != mapped {msize:#x}")
      del self.cpu_maps[addr]
      if kind == "doorbell":
        m, ctrl = owner
        self.doorbell_maps.pop(ctrl, None)
        del m  # python's mmap object unmaps when collected; nothing else refers to it
      else: _libc.munmap(addr, size)

  def ioctl(self, fd:int, request:int, arg) -> int:
    name = self._names.get(request)
    with self.lock:
      kind, obj = self._fd(fd)
      if name is None: raise self._refuse(errno.ENOTTY, f"unknown ioctl {request:#x} on a {kind} fd")
      want = (request >> 16) & 0x3fff
      if not isinstance(arg, int) and ctypes.sizeof(arg) != want:
        raise self._refuse(errno.EINVAL, f"{name}: argument is {ctypes.sizeof(arg)} bytes, the number encodes {want}")
      if isinstance(arg, int) and want != 0: raise self._refuse(errno.EINVAL, f"{name} takes a struct, got an int")
      self.calls.append(name)
      if self.inject.get(name):
        code = self.inject[name].pop(0)
        raise _err(code, f"injected {errno.errorcode[code]} for {name}")
      handler = getattr(self, "_" + name, None)
      expected_kind = {"NVGPU_GPU": "ctrl", "NVGPU_AS_": "as", "NVGPU_TSG": "tsg", "NVGPU_IOC": "channel", "NVMAP_IOC": "nvmap"}[name[:9]]
      if kind != expected_kind: raise self._refuse(errno.ENOTTY, f"{name} issued on a {kind} fd")
      assert handler is not None, name
      handler(obj, arg)
      return 0

  def doorbell(self, usermode_addr:int, offset:int, token:int) -> None:
    if usermode_addr not in self.doorbell_maps.values(): raise GPUFault("doorbell written outside the usermode page")
    if offset != U.USERMODE_DOORBELL_OFFSET: raise GPUFault(f"doorbell at offset {offset:#x}, expected 0x90")
    ctypes.c_uint32.from_address(usermode_addr + offset).value = token
    with self.lock:
      if token not in self.channels: raise GPUFault(f"doorbell with unknown work submit token {token:#x}")
      self._run_all()

  # ---------------- helpers ----------------
  def _new_fd(self, kind:str, obj, fd:int|None=None) -> int:
    fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) if fd is None else fd
    with self.lock: self.fds[fd] = (kind, obj)
    return fd

  def _fd(self, fd:int) -> tuple[str, object]:
    if fd not in self.fds: raise _err(errno.EBADF, f"fd {fd} is not open")
    return self.fds[fd]

  def _refuse(self, code:int, why:str) -> OSError:
    self.refusals.append(why)
    return _err(code, why)

  def _dmabuf(self, fd:int, what:str) -> Handle:
    kind, obj = self.fds.get(fd, (None, None))
    if kind != "dmabuf": raise self._refuse(errno.EBADF, f"{what}: fd {fd} is not a dma-buf")
    return obj

  # ---------------- ctrl ioctls ----------------
  def _NVGPU_GPU_IOCTL_GET_CHARACTERISTICS(self, _, a):
    c = U.nvgpu_gpu_characteristics(arch=0x170, impl=0xb, num_gpc=2, num_tpc_per_gpc=4, compute_class=COMPUTE_CLASS, gpfifo_class=GPFIFO_CLASS,
      dma_copy_class=DMA_CLASS, sm_arch_sm_version=0x807, sm_arch_warp_count=48, gpu_va_bit_count=VA_BITS, max_gpfifo_entries=1 << 16,
      flags=U.NVGPU_GPU_FLAGS_SUPPORT_USERMODE_SUBMIT | U.NVGPU_GPU_FLAGS_SUPPORT_IO_COHERENCE | U.NVGPU_GPU_FLAGS_SUPPORT_TSG_SUBCONTEXTS)
    n = min(a.gpu_characteristics_buf_size, ctypes.sizeof(c))   # the kernel copies min(in, out) bytes
    if n == 0 or a.gpu_characteristics_buf_addr == 0: raise self._refuse(errno.EINVAL, "GET_CHARACTERISTICS needs a buffer")
    ctypes.memmove(a.gpu_characteristics_buf_addr, ctypes.addressof(c), n)
    a.gpu_characteristics_buf_size = ctypes.sizeof(c)

  def _NVGPU_GPU_IOCTL_ALLOC_AS(self, _, a):
    s, e, two_mib = a.va_range_start, a.va_range_end, 2 << 20
    if s == 0 or e == 0 or s % two_mib or e % two_mib: raise self._refuse(errno.EINVAL, "AS bounds must be non-zero and 2 MiB aligned")
    if not s < e <= (1 << VA_BITS): raise self._refuse(errno.EINVAL, f"AS range {s:#x}..{e:#x} outside {VA_BITS}-bit VA")
    if a.big_page_size not in (0, 64 << 10): raise self._refuse(errno.EINVAL, "big_page_size must be 0 (default) or 64 KiB")
    a.as_fd = self._new_fd("as", AddressSpace(s, e))

  def _NVGPU_GPU_IOCTL_OPEN_TSG(self, _, a):
    if a.flags != 0: raise self._refuse(errno.EINVAL, "OPEN_TSG flags must be 0")
    a.tsg_fd = self._new_fd("tsg", None)
    self.fds[a.tsg_fd] = ("tsg", TSG(a.tsg_fd))

  def _NVGPU_GPU_IOCTL_OPEN_CHANNEL(self, _, a):
    if a.runlist_id != -1: raise self._refuse(errno.EINVAL, "runlist_id must be -1 (primary runlist)")
    fd = self._new_fd("channel", None)
    self.fds[fd] = ("channel", Channel(fd))
    a.runlist_id = fd   # union: the channel fd comes back in the same 4 bytes

  # ---------------- address space ioctls ----------------
  def _overlaps(self, as_:AddressSpace, s:int, e:int, include_reservations=True) -> bool:
    ranges = [(m.va, m.va + m.size) for m in as_.maps] + (as_.reservations if include_reservations else [])
    return any(s < re_ and rs < e for rs, re_ in ranges)

  def _NVGPU_AS_IOCTL_ALLOC_SPACE(self, as_:AddressSpace, a):
    if not a.flags & U.NVGPU_AS_ALLOC_SPACE_FLAGS_FIXED_OFFSET: raise self._refuse(errno.EINVAL, "only FIXED_OFFSET reservations are emulated")
    if a.page_size not in (PAGE, 64 << 10) or a.pages == 0: raise self._refuse(errno.EINVAL, "ALLOC_SPACE needs a valid page size and pages > 0")
    s, e = a.offset, a.offset + a.pages * a.page_size
    if s % a.page_size or s < as_.start or e > as_.end: raise self._refuse(errno.EINVAL, f"reservation {s:#x}..{e:#x} misaligned or outside the AS")
    if self._overlaps(as_, s, e): raise self._refuse(errno.EINVAL, f"reservation {s:#x}..{e:#x} overlaps")
    as_.reservations.append((s, e))

  def _NVGPU_AS_IOCTL_MAP_BUFFER_EX(self, as_:AddressSpace, a):
    h = self._dmabuf(a.dmabuf_fd, "MAP_BUFFER_EX")
    if a.flags & ~U.NVGPU_AS_MAP_BUFFER_FLAGS_CACHEABLE: raise self._refuse(errno.EINVAL, f"unsupported map flags {a.flags:#x}")
    if a.page_size != PAGE: raise self._refuse(errno.EINVAL, f"page_size {a.page_size} (only 4 KiB is emulated; 0 is invalid)")
    if a.buffer_offset != 0 or a.mapping_size != 0: raise self._refuse(errno.EINVAL, "non-fixed mappings need buffer_offset=0, mapping_size=0")
    if a.compr_kind == U.NV_KIND_INVALID and a.incompr_kind == U.NV_KIND_INVALID: raise self._refuse(errno.EINVAL, "no valid PTE kind")
    # top-down first fit below the end of the AS, skipping reservations and existing maps (like the kernel's allocator)
    size, top = (h.size + PAGE - 1) & ~(PAGE - 1), as_.end
    for s, e in sorted([(m.va, m.va + m.size) for m in as_.maps] + as_.reservations, reverse=True) + [(as_.start, as_.start)]:
      if top - size >= e and top - size >= as_.start: break
      top = min(top, s)
    else: raise _err(errno.ENOMEM, "GPU VA space exhausted")
    va = top - size
    if va < as_.start or self._overlaps(as_, va, va + size): raise _err(errno.ENOMEM, "GPU VA space exhausted")
    m = Mapping(va, size, h, bool(a.flags & U.NVGPU_AS_MAP_BUFFER_FLAGS_CACHEABLE))
    bisect.insort(as_.maps, m, key=lambda x: x.va)
    h.gpu_maps += 1
    a.offset = va

  def _NVGPU_AS_IOCTL_UNMAP_BUFFER(self, as_:AddressSpace, a):
    m = next((m for m in as_.maps if m.va == a.offset), None)
    if m is None: raise self._refuse(errno.EINVAL, f"UNMAP of {a.offset:#x}, which is not mapped")
    as_.maps.remove(m)
    m.handle.gpu_maps -= 1

  def _NVGPU_AS_IOCTL_BIND_CHANNEL(self, as_:AddressSpace, a):
    kind, ch = self.fds.get(a.channel_fd, (None, None))
    if kind != "channel": raise self._refuse(errno.EINVAL, "AS BIND_CHANNEL: not a channel fd")
    if ch.as_ is not None: raise self._refuse(errno.EINVAL, "channel already bound to an address space")
    ch.as_ = as_
    as_.channels.add(ch.fd)

  # ---------------- TSG ioctls ----------------
  def _NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT(self, tsg:TSG, a):
    kind, as_ = self.fds.get(a.as_fd, (None, None))
    if kind != "as": raise self._refuse(errno.EINVAL, "CREATE_SUBCONTEXT: as_fd is not an address space")
    if a.type not in (0, U.NVGPU_TSG_SUBCONTEXT_TYPE_ASYNC): raise self._refuse(errno.EINVAL, "subcontext type must be SYNC(0) or ASYNC(1)")
    a.veid = len(tsg.veids)
    tsg.veids[a.veid] = as_

  def _NVGPU_TSG_IOCTL_BIND_CHANNEL_EX(self, tsg:TSG, a):
    kind, ch = self.fds.get(a.channel_fd, (None, None))
    if kind != "channel": raise self._refuse(errno.EINVAL, "BIND_CHANNEL_EX: not a channel fd")
    if ch.as_ is None: raise self._refuse(errno.EINVAL, "bind the channel to the AS (AS BIND_CHANNEL) before the TSG")
    if a.subcontext_id not in tsg.veids: raise self._refuse(errno.EINVAL, f"subcontext {a.subcontext_id} was not created")
    if tsg.veids[a.subcontext_id] is not ch.as_: raise self._refuse(errno.EINVAL, "subcontext and channel use different address spaces")
    if any(a.reserved): raise self._refuse(errno.EINVAL, "reserved bytes must be zero")
    ch.tsg = tsg
    tsg.channels.add(ch.fd)

  # ---------------- channel ioctls ----------------
  def _NVGPU_IOCTL_CHANNEL_WDT(self, ch:Channel, a):
    ch.wdt_enabled = not (a.wdt_status & U.NVGPU_IOCTL_CHANNEL_DISABLE_WDT)

  def _NVGPU_IOCTL_CHANNEL_SETUP_BIND(self, ch:Channel, a):
    if ch.bound: raise self._refuse(errno.EEXIST, "GPFIFO already set up")
    if ch.as_ is None or ch.tsg is None: raise self._refuse(errno.EINVAL, "SETUP_BIND before the channel is bound to AS and TSG")
    want = U.NVGPU_CHANNEL_SETUP_BIND_FLAGS_DETERMINISTIC | U.NVGPU_CHANNEL_SETUP_BIND_FLAGS_USERMODE_SUPPORT
    if a.flags != want: raise self._refuse(errno.EINVAL, f"SETUP_BIND flags {a.flags:#x}, expected {want:#x} (usermode needs deterministic)")
    if ch.wdt_enabled: raise self._refuse(errno.EINVAL, "deterministic channel with a live watchdog: disable it (CHANNEL_WDT) first")
    n = a.num_gpfifo_entries
    if n < 2 or n & (n - 1) or n > (1 << 16): raise self._refuse(errno.EINVAL, f"num_gpfifo_entries {n} is not a power of two in [2, 65536]")
    if a.num_inflight_jobs != 0: raise self._refuse(errno.EINVAL, "num_inflight_jobs must be 0 for usermode submit")
    if a.userd_dmabuf_offset or a.gpfifo_dmabuf_offset: raise self._refuse(errno.EINVAL, "dma-buf offsets must be 0")
    ring, userd = self._dmabuf(a.gpfifo_dmabuf_fd, "SETUP_BIND gpfifo"), self._dmabuf(a.userd_dmabuf_fd, "SETUP_BIND userd")
    if ring.size < max(PAGE, n * 8): raise self._refuse(errno.EINVAL, f"ring dma-buf {ring.size:#x} < max(4 KiB, entries*8)")
    if ring.size > MAX_RING_BYTES:
      raise self._refuse(errno.EFBIG, f"ring dma-buf of {ring.size:#x} bytes: a 3 MiB ring froze a real Orin at ALLOC_OBJ_CTX (facts, pitfall 1)")
    if userd.size < U.USERD_SIZE: raise self._refuse(errno.EINVAL, "USERD must be at least 4 KiB")
    ch.bound, ch.entries, ch.ring, ch.userd = True, n, ring, userd
    ch.token, self._next_token = self._next_token, self._next_token + 1
    self.channels[ch.token] = ch
    a.work_submit_token, a.gpfifo_gpu_va, a.userd_gpu_va, a.usermode_mmio_gpu_va = ch.token, 0, 0, 0

  def _NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX(self, ch:Channel, a):
    if not ch.bound: raise self._refuse(errno.EINVAL, "ALLOC_OBJ_CTX before SETUP_BIND")
    if a.class_num not in (COMPUTE_CLASS, DMA_CLASS): raise self._refuse(errno.EINVAL, f"class {a.class_num:#x} not supported on ga10b")
    ch.classes.add(a.class_num)
    a.obj_id = len(ch.classes)

  def _NVGPU_IOCTL_CHANNEL_SET_ERROR_NOTIFIER(self, ch:Channel, a):
    h = self._dmabuf(a.mem, "SET_ERROR_NOTIFIER")
    if a.offset + max(a.size, 16) > h.size: raise self._refuse(errno.EINVAL, "error notifier outside its buffer")
    ch.notifier = (h, a.offset)

  def _channel_closed(self, ch:Channel):
    if ch.as_ is not None: ch.as_.channels.discard(ch.fd)
    if ch.tsg is not None: ch.tsg.channels.discard(ch.fd)
    self.channels.pop(ch.token, None)

  # ---------------- nvmap ioctls ----------------
  def _NVMAP_IOC_CREATE(self, _, a):
    if a.size == 0: raise self._refuse(errno.EINVAL, "NVMAP_IOC_CREATE of 0 bytes")
    h = Handle(self._next_handle, a.size, os.memfd_create("nvmap", os.MFD_CLOEXEC))
    self._next_handle += 1
    self.handles[h.id] = h
    a.handle = h.id

  def _NVMAP_IOC_ALLOC(self, _, a):
    h = self.handles.get(a.handle)
    if h is None: raise self._refuse(errno.EINVAL, f"NVMAP_IOC_ALLOC of unknown handle {a.handle:#x}")
    if h.allocated: raise self._refuse(errno.EEXIST, "handle already allocated")
    if a.heap_mask & U.NVMAP_HEAP_CARVEOUT_GENERIC_SYSMEM: raise self._refuse(errno.ENOMEM, "the SYSMEM heap answers ENOMEM on Orin; use IOVMM")
    if a.heap_mask != U.NVMAP_HEAP_IOVMM: raise self._refuse(errno.EINVAL, f"heap mask {a.heap_mask:#x}: use IOVMM")
    if a.align < PAGE or a.align & (a.align - 1): raise self._refuse(errno.EINVAL, f"align {a.align:#x} must be a power of two >= 4 KiB")
    if (a.flags & 0x1f) > U.NVMAP_HANDLE_CACHEABLE: raise self._refuse(errno.EINVAL, f"cache flags {a.flags & 0x1f}")
    size = (h.size + PAGE - 1) & ~(PAGE - 1)
    if self._used + size > self.memory_limit: raise _err(errno.ENOMEM, "out of (fake) memory")
    os.ftruncate(h.memfd, size)
    h.phys = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, h.memfd, 0)
    h.allocated, h.cache, self._used = True, a.flags & 0x1f, self._used + size

  def _NVMAP_IOC_GET_FD(self, _, a):
    h = self.handles.get(a.handle)
    if h is None or not h.allocated: raise self._refuse(errno.EINVAL, "GET_FD of an unallocated handle")
    a.size = self._new_fd("dmabuf", h, fd=os.dup(h.memfd))   # the fd comes back in the first u32

  def _NVMAP_IOC_FREE(self, _, handle:int):
    h = self.handles.get(handle)
    if h is None: raise self._refuse(errno.EINVAL, f"NVMAP_IOC_FREE of unknown handle {handle:#x}")
    if h.gpu_maps: raise self._refuse(errno.EBUSY, "NVMAP_IOC_FREE of a handle still mapped in a GPU address space (unmap first)")
    del self.handles[handle]
    if h.allocated:
      _libc.munmap(h.phys, (h.size + PAGE - 1) & ~(PAGE - 1))
      self._used -= (h.size + PAGE - 1) & ~(PAGE - 1)
    os.close(h.memfd)

  # ---------------- the command processor ----------------
  def _host(self, as_:AddressSpace, va:int, size:int) -> int:
    i = bisect.bisect_right([m.va for m in as_.maps], va) - 1
    if i < 0 or va + size > (m:=as_.maps[i]).va + m.size: raise GPUFault(f"MMU fault: {size:#x} bytes at unmapped GPU VA {va:#x}")
    return m.handle.phys + (va - m.va)

  def _cp_loop(self):
    while not self._stop.wait(5e-4):
      with self.lock:
        try: self._run_all()
        except Exception: pass   # faults are recorded on the channel; never let the thread die

  def _run_all(self):
    progress = True
    while progress: progress = any([self._run_channel(ch) for ch in list(self.channels.values())])

  def _run_channel(self, ch:Channel) -> bool:
    """Run a channel until it is idle or blocked; returns whether anything was executed."""
    if ch.error is not None or ch.ring is None or not ch.classes: return False
    userd, ring = ch.userd.phys, ch.ring.phys
    progress = False
    while True:
      if ch.pb is None:
        put = ctypes.c_uint32.from_address(userd + U.USERD_GP_PUT_OFFSET).value
        if ch.get == put % ch.entries: return progress
        entry = ctypes.c_uint64.from_address(ring + 8 * ch.get).value
        va, ndw = entry & ((1 << VA_BITS) - 1) & ~3, (entry >> 42) & 0x1fffff
        try: dw = (ctypes.c_uint32 * ndw).from_address(self._host(ch.as_, va, ndw * 4))
        except GPUFault as e: return self._fault(ch, str(e))
        ch.pb = [list(dw), 0, None]
      try:
        if not self._exec_pb(ch): return progress   # blocked on an acquire
      except GPUFault as e: return self._fault(ch, str(e))
      ch.pb, ch.get, progress = None, (ch.get + 1) % ch.entries, True
      ctypes.c_uint32.from_address(userd + U.USERD_GP_GET_OFFSET).value = ch.get

  def _fault(self, ch:Channel, msg:str) -> bool:
    ch.error = msg
    if ch.notifier is not None:
      h, off = ch.notifier
      ctypes.c_uint32.from_address(h.phys + off + U.NOTIFIER_INFO32_OFFSET).value = 31
      ctypes.c_uint16.from_address(h.phys + off + U.NOTIFIER_STATUS_OFFSET).value = 0xffff
    return True

  def _exec_pb(self, ch:Channel) -> bool:
    dws, pos, pending = ch.pb
    while pos < len(dws) or pending:
      if pending is None:
        hdr = dws[pos]
        if hdr == 0:   # a zero dword is a no-op; bound queues are submitted with their page's zero padding
          pos += 1
          continue
        if (hdr >> 29) != 1: raise GPUFault(f"pushbuffer header {hdr:#x}: only incrementing methods are emulated")
        count, subc, mthd = (hdr >> 16) & 0x1fff, (hdr >> 13) & 7, (hdr & 0x1fff) << 2
        pending = [subc, mthd, dws[pos + 1: pos + 1 + count]]
        pos += 1 + count
      subc, mthd, args = pending
      while args:
        if not self._method(ch, subc, mthd, args[0]):
          ch.pb = [dws, pos, [subc, mthd, args]]
          return False
        mthd, args = mthd + 4, args[1:]
      pending = None
    ch.pb = [dws, pos, None]
    return True

  def _method(self, ch:Channel, subc:int, mthd:int, val:int) -> bool:
    if mthd < 0x100:   # host methods, valid on any subchannel
      if mthd in (0x5c, 0x60, 0x64, 0x68): ch.sem[mthd] = val
      elif mthd == 0x6c: return self._host_semaphore(ch, val)
      elif mthd == 0x20: pass   # non-stall interrupt: nothing listens on Tegra
      elif mthd == 0x0: ch.objects[subc] = val
      else: raise GPUFault(f"unknown host method {mthd:#x}")
      return True
    if subc not in ch.objects: raise GPUFault(f"method {mthd:#x} on subchannel {subc} before SET_OBJECT")
    if ch.objects[subc] not in ch.classes: raise GPUFault(f"subchannel {subc} uses class {ch.objects[subc]:#x} without ALLOC_OBJ_CTX")
    if ch.objects[subc] == COMPUTE_CLASS: self._compute_method(ch, mthd, val)
    elif ch.objects[subc] == DMA_CLASS: self._copy_method(ch, mthd, val)
    return True

  def _host_semaphore(self, ch:Channel, ex:int) -> bool:
    addr = ch.sem.get(0x5c, 0) | (ch.sem.get(0x60, 0) << 32)
    payload = ch.sem.get(0x64, 0) | (ch.sem.get(0x68, 0) << 32)
    op, wide = ex & 7, (ex >> 24) & 1
    if addr % (8 if wide else 4): raise GPUFault(f"misaligned semaphore {addr:#x}")
    host = self._host(ch.as_, addr, 16 if (ex >> 25) & 1 else (8 if wide else 4))
    cur = ctypes.c_uint64.from_address(host).value if wide else ctypes.c_uint32.from_address(host).value
    if op == 1:   # release (after all prior work, which in this emulation has already completed)
      if wide: ctypes.c_uint64.from_address(host).value = payload
      else: ctypes.c_uint32.from_address(host).value = payload & 0xffffffff
      if (ex >> 25) & 1: ctypes.c_uint64.from_address(host + 8).value = time.perf_counter_ns()
      self.releases.append((addr, payload))
      return True
    if op == 3: return ((cur - payload) & ((1 << 64) - 1 if wide else 0xffffffff)) < (1 << (63 if wide else 31))  # circular >=
    if op == 4: return (cur & payload) != 0
    if op == 5: return (~(cur | payload) & 0xffffffff) != 0
    raise GPUFault(f"semaphore operation {op} not emulated")

  def _copy_method(self, ch:Channel, mthd:int, val:int):
    ch.copy[mthd] = val
    if mthd != 0x300: return   # LAUNCH_DMA
    if (xfer:=val & 3) != 0:
      if xfer != 2: raise GPUFault("only non-pipelined copies are emulated")
      c = ch.copy
      src, dst, n = (c.get(0x400, 0) << 32) | c.get(0x404, 0), (c.get(0x408, 0) << 32) | c.get(0x40c, 0), c.get(0x418, 0)
      if n: ctypes.memmove(self._host(ch.as_, dst, n), self._host(ch.as_, src, n), n)
      self.copies += 1
    if (sem:=(val >> 3) & 3) != 0:
      addr, payload = (ch.copy.get(0x240, 0) << 32) | ch.copy.get(0x244, 0), ch.copy.get(0x248, 0)
      host = self._host(ch.as_, addr, 16 if sem == 2 else 4)
      if sem == 2:   # four-word semaphore: 32-bit payload, zero, then a 64-bit timestamp
        ctypes.c_uint64.from_address(host).value = payload
        ctypes.c_uint64.from_address(host + 8).value = time.perf_counter_ns()
      else: ctypes.c_uint32.from_address(host).value = payload
      self.releases.append((addr, payload))

  def _compute_method(self, ch:Channel, mthd:int, val:int):
    ch.copy[("c", mthd)] = val
    if mthd == 0x2b4: ch.sem["qmd"] = val << 8                       # SEND_PCAS_A: QMD address >> 8
    elif mthd == 0x2c0:                                               # SEND_SIGNALING_PCAS2_B: launch
      qmd_va, seen = ch.sem.get("qmd"), 0
      while qmd_va is not None:
        qmd_va, seen = self._launch(ch, qmd_va), seen + 1
        if seen > 4096: raise GPUFault("QMD dependency chain loops")

  def _launch(self, ch:Channel, qmd_va:int) -> int|None:
    """Check one QMD (version 3, Ampere) and perform its embedded releases; return the dependent QMD to launch next."""
    q = bytes((ctypes.c_uint8 * 0x100).from_address(self._host(ch.as_, qmd_va, 0x100)))
    f = _qmd_fields()
    def rd(name):
      hi, lo = f[name]
      return (int.from_bytes(q, "little") >> lo) & ((1 << (hi - lo + 1)) - 1)
    if rd("QMD_MAJOR_VERSION") != 3: raise GPUFault(f"QMD at {qmd_va:#x}: major version {rd('QMD_MAJOR_VERSION')} != 3")
    prog = (rd("PROGRAM_ADDRESS_UPPER") << 32) | rd("PROGRAM_ADDRESS_LOWER")
    self._host(ch.as_, prog, 4)
    if not rd("CONSTANT_BUFFER_VALID_0"): raise GPUFault("QMD without constant buffer 0 (kernel arguments)")
    cb0 = (rd("CONSTANT_BUFFER_ADDR_UPPER_0") << 32) | rd("CONSTANT_BUFFER_ADDR_LOWER_0")
    self._host(ch.as_, cb0, max(16, rd("CONSTANT_BUFFER_SIZE_SHIFTED4_0")))
    grid = (rd("CTA_RASTER_WIDTH"), rd("CTA_RASTER_HEIGHT"), rd("CTA_RASTER_DEPTH"))
    block = (rd("CTA_THREAD_DIMENSION0"), rd("CTA_THREAD_DIMENSION1"), rd("CTA_THREAD_DIMENSION2"))
    if min(grid) < 1 or min(block) < 1 or block[0] * block[1] * block[2] > 1024:
      raise GPUFault(f"QMD at {qmd_va:#x}: bad launch grid {grid} block {block}")
    if rd("SHARED_MEMORY_SIZE") > 100 << 10: raise GPUFault("QMD asks for more than 100 KiB of shared memory")
    self.launches.append({"qmd": qmd_va, "program": prog, "cbuf0": cb0, "grid": grid, "block": block,
                          "qmd_releases": [rd(f"RELEASE{i}_ENABLE") for i in range(2)]})
    for i in range(2):
      if rd(f"RELEASE{i}_ENABLE"):
        addr = (rd(f"RELEASE{i}_ADDRESS_UPPER") << 32) | rd(f"RELEASE{i}_ADDRESS_LOWER")
        payload = (rd(f"RELEASE{i}_PAYLOAD_UPPER") << 32) | rd(f"RELEASE{i}_PAYLOAD_LOWER")
        ctypes.c_uint64.from_address(self._host(ch.as_, addr, 8)).value = payload
        self.releases.append((addr, payload))
    return (rd("DEPENDENT_QMD0_POINTER") << 8) if rd("DEPENDENT_QMD0_ENABLE") else None

_QMD_FIELDS:dict|None = None
def _qmd_fields() -> dict:
  """QMD V03 bit positions, from tinygrad's autogenerated class headers (test tooling may import tinygrad)."""
  global _QMD_FIELDS
  if _QMD_FIELDS is None:
    from tinygrad.runtime.autogen import nv_570 as g
    p = "NVC6C0_QMDV03_00_"
    _QMD_FIELDS = {k[len(p):]: v for k, v in g.__dict__.items() if k.startswith(p) and isinstance(v, tuple)}
    _QMD_FIELDS.update({k[len(p):] + f"_{i}": v(i) for k, v in g.__dict__.items() if k.startswith(p) and callable(v) for i in range(8)})
  return _QMD_FIELDS

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

# ---------------- a stand-in compiler ----------------
def fake_cubin(ptx:str) -> bytes:
  """Wrap PTX in the smallest ELF that tinygrad's NV program loader accepts: one `.text.<kernel>` section.
  There is no ptxas here; the fake GPU checks QMDs and never executes the code."""
  from tinygrad.runtime.autogen import libc
  name = re.search(r"\.entry\s+(\w+)", ptx).group(1)
  text = ptx.encode() + b"\0" * (-len(ptx) % 128 or 128)
  shstr = b"\0.shstrtab\0" + f".text.{name}".encode() + b"\0"
  eh, sh = ctypes.sizeof(libc.Elf64_Ehdr), ctypes.sizeof(libc.Elf64_Shdr)
  text_off, str_off = eh, eh + len(text)
  sh_off = (str_off + len(shstr) + 7) & ~7
  hdr = libc.Elf64_Ehdr(e_type=2, e_machine=190, e_version=1, e_shoff=sh_off, e_ehsize=eh, e_shentsize=sh, e_shnum=3, e_shstrndx=1)
  hdr.e_ident[:7] = [0x7f, ord('E'), ord('L'), ord('F'), libc.ELFCLASS64, 1, 1]
  shdrs = [libc.Elf64_Shdr(), libc.Elf64_Shdr(sh_name=1, sh_type=3, sh_offset=str_off, sh_size=len(shstr), sh_addralign=1),
           libc.Elf64_Shdr(sh_name=11, sh_type=1, sh_flags=6, sh_offset=text_off, sh_size=len(text), sh_addralign=128)]
  blob = bytearray(bytes(hdr) + text + shstr)
  blob += b"\0" * (sh_off - len(blob))
  for s in shdrs: blob += bytes(s)
  return bytes(blob)

def install_fake_compiler():
  """Make tinygrad's NV PTX compiler produce `fake_cubin` ELFs (no CUDA toolkit on a CPU-only machine). Run with
  PARALLEL=0: compile workers are separate processes and would not see this patch."""
  from tinygrad.runtime.support import compiler_cuda
  class FakeNVPTXCompiler(compiler_cuda.PTXCompiler):
    def compile(self, src:str) -> bytes: return fake_cubin(src)
  compiler_cuda.NVPTXCompiler = FakeNVPTXCompiler
