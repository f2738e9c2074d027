"""A fake Orin: nvgpu + nvmap emulated at the ioctl level, and a GPU that runs tinygrad's kernels.

It implements the calls of `backend.devio.LinuxIO` (exists, open, ioctl, mmap, munmap, close, store_barrier, doorbell,
l4t_release). Its numbers, struct layouts and rules come from `backend/testing/kernel_facts.py`, a table transcribed from
the L4T headers and driver sources -- never from backend/uapi.py, so the backend is checked against the sources and not
against itself.

- nvmap handles are real memory (a memfd each); GET_FD hands out a dma-buf-like fd the caller can mmap.
- a 40-bit GPU address space: top-down placement around ALLOC_SPACE reservations, GPU VA -> memory translation.
- TSG, subcontexts and channels with the kernel's ordering rules (AS bind before TSG bind, no live watchdog on a
  deterministic channel, usermode submit only with DETERMINISTIC, zero dma-buf offsets, power-of-two entries, one
  doorbell mapping per ctrl fd) and its VEID numbering (the SYNC subcontext is VEID 0, ASYNC ones are 1..63). Each
  refusal raises OSError with the kernel's errno and names its source in kernel_facts; the few rules the kernel does not
  have are listed, with the reason, in K.STRICTER_THAN_KERNEL.
- a GPU that walks GPFIFO entries and pushbuffers: host semaphore acquire/release, copy-engine copies and semaphores,
  and compute launches. A launch reads its QMD (grid, block, shared memory, constant buffer 0, program address), takes
  the program tinygrad compiled from GPU memory at the program address, and runs its UOps with tinygrad's Python
  emulator (ops_python) on the fake's buffer memory, with the buffer addresses and values read from constant buffer 0.
- what the hardware does to a wrong choice:
  * GPU L2: a mapping made with CACHEABLE keeps the GPU's copy of each 4 KiB page it has read; CPU writes after that
    are not seen by the GPU (one-way coherence: nothing invalidates GPU L2 lines on a CPU store);
  * write-combined stores drain out of order: if GP_PUT and the GPFIFO entry it publishes reach memory between the same
    two store barriers, the GPU may fetch the entry before it lands -- the fake faults the channel;
  * GP_GET is written back to USERD only every `gpget_writeback_every` entries (never on idle);
  * a channel that faulted is dead: the error notifier is written and the channel never runs again.
- counters of live handles, mappings and fds, so tests can prove nothing leaks.

Kernels run synchronously, on the thread that rings the doorbell. A background thread retries channels blocked on an
acquire (a value another channel or the CPU writes later); it sleeps on an event while no channel is blocked, so it
never takes the lock (or the GIL) from a thread running kernels -- polling every 0.5 ms regardless cost a small
project run ~13 s of lock waits and 14 ms per store barrier.
The compiler for fake mode (`renderers()`) renders kernels for tinygrad's Python emulator and wraps them in an ELF that
tinygrad's NV program loader accepts; there is no PTX, SASS or SM here, so nothing about speed or the real compiler.
"""
from __future__ import annotations
import bisect, ctypes, errno, mmap, os, pickle, struct, sys, threading, time
from dataclasses import dataclass, field
from backend.testing import kernel_facts as K

CTRL_PATH, NVMAP_PATH = "/dev/nvgpu/igpu0/ctrl", "/dev/nvmap"
PAGE = K.PAGE
MAX_RING_BYTES = K.MAX_RING_BYTES   # stricter than the kernel: a 3 MiB ring froze a real Orin (K.STRICTER_THAN_KERNEL)
PROGRAM_MAGIC = b"TGFAKEv1"

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
  refs: int = 1               # the handle, each dma-buf fd and each GPU mapping keep the pages alive (like dma-buf refcounts)

@dataclass
class Mapping:  # one GPU VA range
  va: int
  size: int
  handle: Handle
  cacheable: bool
  l2: dict = field(default_factory=dict)   # page index -> the GPU's cached copy (CACHEABLE mappings only)

@dataclass
class AddressSpace:
  start: int
  end: int
  big_pages: int = 0                                # the big page size, 0 when ALLOC_AS asked for none (as.c:73-76)
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
  deterministic: bool = False
  entries: int = 0
  ring: Handle|None = None
  userd: Handle|None = None
  token: int = 0
  classes: set = field(default_factory=set)
  notifier: tuple|None = None     # (handle, offset)
  get: int = 0
  visible_put: int = 0            # GP_PUT as the GPU sees it: what the last store barrier drained
  drained_ring: bytes = b""       # the ring as of the last store barrier
  since_writeback: int = 0
  pb: list|None = None            # the pushbuffer being executed: [dwords, position, pending method]
  sem: dict = field(default_factory=dict)
  copy: dict = field(default_factory=dict)
  objects: dict = field(default_factory=dict)   # subchannel -> class set with SET_OBJECT
  error: str|None = None

@dataclass
class TSG:
  fd: int
  veids: dict = field(default_factory=dict)  # allocated VEID -> the AS it was created with (tsg.c subctx_vms; None allowed)
  channels: set = field(default_factory=set)

class FakeTegra:
  """Drop-in for LinuxIO. `FakeTegra().install()` makes the backend use it; TEGRA_FAKE=1 does the same for any program."""
  name = "fake"

  def __init__(self, memory_limit:int=2 << 30, nodes:tuple[str, ...]=(CTRL_PATH, NVMAP_PATH), thread:bool=True, gpget_writeback_every:int=64,
               l4t_release:str|None=K.L4T_RELEASE):
    self.memory_limit, self.nodes, self.gpget_writeback_every, self.release = memory_limit, set(nodes), gpget_writeback_every, l4t_release
    self.lock = threading.RLock()
    self.fds:dict[int, tuple[str, object]] = {}      # fd -> (kind, object)
    self.handles:dict[int, Handle] = {}
    self.cpu_maps:dict[int, tuple[int, str, object]] = {}  # addr -> (size, kind, owner)
    self.channels:dict[int, Channel] = {}               # token -> channel
    self.doorbell_maps:dict[int, int] = {}              # ctrl fd -> addr
    self.releases:list[tuple[int, int]] = []            # every semaphore release (gpu va, value), in execution order
    self.launches:list[dict] = []                       # every compute launch's QMD fields
    self.copies, self.kernels_run, self.barriers = 0, 0, 0
    self.refusals:list[str] = []
    self.calls:list[str] = []                           # names of ioctls issued, in order (kernel_facts.IOCTLS keys)
    self.inject:dict[str, list[int]] = {}               # ioctl name -> errnos to return on the next calls
    self._programs:dict[bytes, object] = {}
    self._batched:dict[tuple, tuple|None] = {}          # (program blob, grid, block) -> (blocks-as-lanes program, passes) or None
    self._next_handle, self._next_token, self._used = 0x80000001, 0x100, 0
    self._stop = threading.Event()
    self._blocked = threading.Event()   # set while some channel has work left that it could not run (the thread retries it)
    self._thread = threading.Thread(target=self._cp_loop, name="fake-gpu", daemon=True) if thread else None
    if self._thread is not None:
      sys.setswitchinterval(2e-4)   # let the command processor thread in while tinygrad busy-polls a signal
      self._thread.start()

  def install(self) -> "FakeTegra":
    from backend import devio
    devio.set_io(self)
    return self

  def renderers(self) -> list:
    """The renderer list the backend gives tinygrad in fake mode (kernels for the Python emulator, in an NV ELF)."""
    from backend.testing.fake_compiler import FakeOrinRenderer
    return [FakeOrinRenderer]

  # ---------------- accounting ----------------
  def live(self) -> dict[str, int]:
    with self.lock:
      return {"handles": len(self.handles), "cpu_mappings": len(self.cpu_maps), "fds": len(self.fds),
              "gpu_mappings": sum(len(a.maps) for k, a in self.fds.values() if k == "as")}

  def shutdown(self):
    self._stop.set()
    self._blocked.set()
    if self._thread is not None: self._thread.join(timeout=1)

  # ---------------- the calls of LinuxIO ----------------
  def exists(self, path:str) -> bool: return path in self.nodes
  def l4t_release(self) -> str|None: return self.release

  def open(self, path:str, flags:int=os.O_RDWR) -> int:
    if path not in self.nodes: raise _err(errno.ENOENT, f"no such node {path}")
    return self._new_fd("ctrl" if path == CTRL_PATH else "nvmap", None)

  def close(self, fd:int) -> None:
    with self.lock:
      if fd not in self.fds: raise _err(errno.EBADF, f"close of unknown fd {fd}")
      kind, obj = self.fds.pop(fd)
      if kind == "channel": self._channel_closed(obj)
      os.close(fd)
      if kind == "dmabuf": self._unref(obj)

  def mmap(self, fd:int, size:int, offset:int=0) -> int:
    with self.lock:
      kind, obj = self._fd(fd)
      if kind == "ctrl":   # ioctl_ctrl.c:2661-2668, in the kernel's order
        if fd in self.doorbell_maps: raise self._refuse(errno.EBUSY, "only one usermode (doorbell) mapping per ctrl fd")
        if size > K.USERMODE_SIZE: raise self._refuse(errno.EINVAL, "usermode mapping larger than 64 KiB")
        if offset != 0: raise self._refuse(errno.EINVAL, "usermode mapping at a non-zero offset")
        m = mmap.mmap(-1, size)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        self.doorbell_maps[fd] = addr
        self.cpu_maps[addr] = (size, "doorbell", (m, fd))
        return addr
      if kind == "nvmap":   # nvmap_dev.c:336-343
        raise self._refuse(getattr(errno, K.NVMAP_MMAP_ERRNO), "mmap the dma-buf fd from NVMAP_IOC_GET_FD, not the nvmap fd")
      if kind != "dmabuf": raise self._refuse(errno.ENODEV, f"cannot mmap a {kind} fd (its file has no .mmap: mm/mmap.c do_mmap)")
      h:Handle = obj
      if offset % PAGE or (offset + _round_page(size)) > _round_page(h.size):   # dma-buf.c dma_buf_mmap_internal
        raise self._refuse(errno.EINVAL, f"mmap of {size:#x}@{offset:#x} beyond a {h.size:#x} buffer")
      addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, offset)
      if addr in (None, ctypes.c_void_p(-1).value): raise _err(ctypes.get_errno(), "host mmap failed")
      self.cpu_maps[addr] = (size, "dmabuf", h)
      return addr

  def munmap(self, addr:int, size:int) -> None:
    with self.lock:
      # Linux would accept both (mm/mmap.c do_munmap): guards, K.STRICTER_THAN_KERNEL
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
    name = K.NUMBERS.get(request)
    with self.lock:
      kind, obj = self._fd(fd)
      if name is None or K.IOCTLS[name][0] != kind: raise self._not_taken(kind, request, name)
      layout = K.IOCTLS[name][4]
      self.calls.append(name)
      if self.inject.get(name):
        code = self.inject[name].pop(0)
        raise _err(code, f"injected {errno.errorcode[code]} for {name}")
      handler = getattr(self, "_" + name)
      if layout is None:
        if not isinstance(arg, int): raise self._refuse(errno.EINVAL, f"{name} takes an integer argument")
        handler(obj, arg)
        return 0
      if isinstance(arg, int): raise self._refuse(errno.EFAULT, f"{name} takes a pointer to a struct, got {arg}")
      # The kernel copies _IOC_SIZE(request) bytes from and to the pointer: a smaller struct would be overrun (the
      # kernel cannot tell; the fake refuses so as not to corrupt this process -- K.STRICTER_THAN_KERNEL).
      if ctypes.sizeof(arg) < ctypes.sizeof(layout): raise self._refuse(errno.EFAULT, f"{name}: argument smaller than the ioctl's size")
      a = layout.from_buffer_copy(ctypes.string_at(ctypes.addressof(arg), ctypes.sizeof(layout)))
      handler(obj, a)
      if K.IOCTLS[name][1] & K.IOC_READ: ctypes.memmove(ctypes.addressof(arg), ctypes.addressof(a), ctypes.sizeof(layout))
      return 0

  def store_barrier(self) -> None:
    """`dsb st`: everything the CPU stored so far reaches memory. The GPU sees GP_PUT and ring entries only as drained
    here; an entry drained together with the GP_PUT that publishes it may be fetched before it lands (out-of-order WC)."""
    with self.lock:
      self._drain()
      self._note_blocked()   # GP_PUT published without a doorbell: the command processor thread fetches it

  def _drain(self):
    with self.lock:
      self.barriers += 1
      for ch in self.channels.values():
        if ch.ring is None or ch.error is not None: continue
        ring = ctypes.string_at(ch.ring.phys, ch.entries * 8)
        put = ctypes.c_uint32.from_address(ch.userd.phys + K.USERD_GP_PUT_OFFSET).value % ch.entries
        i = ch.visible_put
        while i != put:
          if ring[8 * i:8 * i + 8] != ch.drained_ring[8 * i:8 * i + 8]:
            self._fault(ch, f"GP_PUT {put} and the GPFIFO entry {i} it publishes were drained by the same store barrier: the GPU can "
                            "fetch the entry before it lands (store barrier missing between the entry and GP_PUT)")
            break
          i = (i + 1) % ch.entries
        ch.drained_ring, ch.visible_put = ring, put

  def doorbell(self, usermode_addr:int, offset:int, token:int) -> None:
    if usermode_addr not in self.doorbell_maps.values(): raise GPUFault("doorbell written outside the usermode page")
    if offset != K.DOORBELL_OFFSET: raise GPUFault(f"doorbell at offset {offset:#x}, expected {K.DOORBELL_OFFSET:#x}")
    with self.lock:   # held throughout, so the command processor thread never wakes for work this thread runs now
      self._drain()   # LinuxIO.doorbell executes the same barrier before the store
      ctypes.c_uint32.from_address(usermode_addr + offset).value = token
      if token not in self.channels: raise GPUFault(f"doorbell with unknown work submit token {token:#x}")
      self._run_all()
      if self._pending(): self._blocked.set()
      else: self._blocked.clear()

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

  def _not_taken(self, kind:str, request:int, name:str|None) -> OSError:
    """A number this fd's driver does not take: the dispatchers' magic/nr check (EINVAL for nvgpu, ENOTTY for nvmap) or their
    default case (ENOTTY); see K.IOCTL_MAGIC. A dma-buf fd takes none of these numbers (ENOTTY)."""
    what = f"{name or f'ioctl {request:#x}'} on a {kind} fd"
    magic, nr = (request >> 8) & 0xff, request & 0xff
    if kind in K.IOCTL_MAGIC and (magic != ord(K.IOCTL_MAGIC[kind]) or (nr == 0 and kind != "nvmap")):
      return self._refuse(getattr(errno, K.DISPATCH_BAD_MAGIC_ERRNO[kind]), f"{what}: not this driver's magic or number")
    return self._refuse(errno.ENOTTY, f"{what}: unrecognized")

  def _dmabuf(self, fd:int, what:str, code:int|None=None) -> Handle:
    """dma_buf_get() (dma-buf.c): EBADF for a number that is no open fd, EINVAL for an fd that is no dma-buf; `code` overrides it
    where the caller maps every failure to one errno (SET_ERROR_NOTIFIER)."""
    kind, obj = self.fds.get(fd, (None, None))
    if kind != "dmabuf":
      default = getattr(errno, K.DMABUF_GET_ERRNO_NOT_FD if kind is None else K.DMABUF_GET_ERRNO_NOT_DMABUF)
      raise self._refuse(code or default, f"{what}: fd {fd} is not a dma-buf")
    return obj

  # ---------------- ctrl ioctls ----------------
  def _GET_CHARACTERISTICS(self, _, a):
    c = (ctypes.c_uint8 * K.CHARACTERISTICS_SIZE)()
    values = {"arch": K.GPU_ARCH, "impl": K.GPU_IMPL, "num_gpc": K.NUM_GPC, "num_tpc_per_gpc": K.NUM_TPC_PER_GPC,
              "compute_class": K.COMPUTE_CLASS, "gpfifo_class": K.GPFIFO_CLASS, "dma_copy_class": K.DMA_CLASS,
              "sm_arch_sm_version": K.SM_VERSION, "sm_arch_warp_count": K.SM_ARCH_WARP_COUNT, "gpu_va_bit_count": K.VA_BITS,
              "max_gpfifo_entries": K.MAX_GPFIFO_ENTRIES,
              "flags": K.GPU_FLAGS_SUPPORT_USERMODE_SUBMIT | K.GPU_FLAGS_SUPPORT_IO_COHERENCE | K.GPU_FLAGS_SUPPORT_TSG_SUBCONTEXTS}
    for fname, (off, ctype) in K.CHARACTERISTICS_OFFSETS.items(): ctype.from_buffer(c, off).value = values.get(fname, 0)
    n = min(a.buf_size, K.CHARACTERISTICS_SIZE)   # ioctl_ctrl.c:560-570: min(in, out) bytes, none when buf_size is 0
    if n:
      if a.buf_addr == 0: raise self._refuse(errno.EFAULT, "GET_CHARACTERISTICS: copy_to_user to address 0")
      ctypes.memmove(a.buf_addr, c, n)
    a.buf_size = K.CHARACTERISTICS_SIZE           # ioctl_ctrl.c:572-573

  def _ALLOC_AS(self, _, a):
    """as.c gk20a_vm_alloc_share(), in its order (K: ALLOC_AS)."""
    s, e, split, big, align = a.va_range_start, a.va_range_end, a.va_range_split, a.big_page_size, K.AS_PDE_ALIGN
    if big and (big & (big - 1) or not big & K.BIG_PAGE_SIZES): raise self._refuse(errno.EINVAL, f"big_page_size {big:#x} not available")
    if s == 0 or e == 0 or s % align or e % align: raise self._refuse(errno.EINVAL, "AS bounds must be non-zero and PDE (2 MiB) aligned")
    if s >= e: raise self._refuse(errno.EINVAL, f"AS range {s:#x}..{e:#x} is empty")
    if a.flags & K.ALLOC_AS_FLAGS_UNIFIED_VA or not big:
      if split: raise self._refuse(errno.EINVAL, "va_range_split must be 0 with UNIFIED_VA or without big pages")
    elif split % align or not s < split < e: raise self._refuse(errno.EINVAL, "a split VA needs a PDE-aligned split inside the range")
    if e + K.CHANNEL_KERNEL_SIZE > K.DEFAULT_APERTURE_SIZE:   # vm.c nvgpu_vm_init_attributes -> as.c:133-140
      raise self._refuse(errno.ENOMEM, f"AS range end {e:#x} + the kernel's 4 GiB exceeds the 49-bit aperture (vm init fails)")
    if e > (1 << K.VA_BITS):   # K.STRICTER_THAN_KERNEL: the fake models a 40-bit VA
      raise self._refuse(errno.ENOMEM, f"AS range end {e:#x} outside the fake's {K.VA_BITS}-bit VA")
    a.as_fd = self._new_fd("as", AddressSpace(s, e, big))

  def _OPEN_TSG(self, _, a):   # ioctl_ctrl.c:708-735 checks no field of the argument
    a.tsg_fd = self._new_fd("tsg", None)
    self.fds[a.tsg_fd] = ("tsg", TSG(a.tsg_fd))

  def _OPEN_CHANNEL(self, _, a):   # ioctl_channel.c:500-507; other runlists are not emulated (K.STRICTER_THAN_KERNEL)
    if a.value != -1: raise self._refuse(errno.EINVAL, f"runlist_id {a.value}: only -1 (the GR runlist) is emulated")
    fd = self._new_fd("channel", None)
    self.fds[fd] = ("channel", Channel(fd))
    a.value = fd   # union: the channel fd comes back in the same 4 bytes

  # ---------------- address space ioctls ----------------
  def _overlaps(self, as_:AddressSpace, s:int, e:int) -> bool:
    return any(s < re_ and rs < e for rs, re_ in [(m.va, m.va + m.size) for m in as_.maps] + as_.reservations)

  def _AS_ALLOC_SPACE(self, as_:AddressSpace, a):
    """vm_area.c nvgpu_vm_area_alloc() (K: ALLOC_SPACE): a page size the VM lacks is EINVAL, a range it cannot give ENOMEM."""
    if a.page_size != PAGE and not (as_.big_pages and a.page_size == as_.big_pages):
      raise self._refuse(errno.EINVAL, f"page_size {a.page_size:#x} is not one of this AS's page sizes")
    if not a.flags & K.ALLOC_SPACE_FLAGS_FIXED_OFFSET: raise self._refuse(errno.EINVAL, "only FIXED_OFFSET reservations are emulated")
    s, e = a.offset, a.offset + a.pages * a.page_size
    if a.pages == 0 or s % a.page_size or s < as_.start or e > as_.end or self._overlaps(as_, s, e):
      raise self._refuse(errno.ENOMEM, f"reservation {s:#x}..{e:#x} is empty, misaligned, outside the AS or overlapping")
    as_.reservations.append((s, e))

  def _AS_MAP_BUFFER_EX(self, as_:AddressSpace, a):
    h = self._dmabuf(a.dmabuf_fd, "MAP_BUFFER_EX")   # vm.c:372-376, then the checks in vm.c's order (K: MAP_BUFFER_EX)
    fixed = a.flags & K.MAP_FLAGS_FIXED_OFFSET
    if not fixed and (a.buffer_offset != 0 or a.offset != 0):
      raise self._refuse(errno.EINVAL, "regular (non-fixed) map with an address or buffer_offset")
    if not fixed and a.mapping_size != 0: raise self._refuse(errno.EINVAL, "map_size && non-fixed-mapping")
    if (a.flags >> K.MAP_ACCESS_SHIFT) & K.MAP_ACCESS_MASK > K.MAP_ACCESS_READ_WRITE: raise self._refuse(errno.EINVAL, "invalid map access")
    if a.flags & K.MAP_FLAGS_TEGRA_RAW: raise self._refuse(errno.EINVAL, "TEGRA_RAW requested when not supported")
    if a.flags & ~K.MAP_FLAGS_KNOWN: raise self._refuse(errno.EINVAL, f"unknown map flags {a.flags:#x}")
    if fixed: raise self._refuse(errno.EINVAL, "FIXED_OFFSET mappings are not emulated")
    if a.page_size == 0: raise self._refuse(errno.EINVAL, "page_size left unset")
    if a.page_size != PAGE: raise self._refuse(errno.EINVAL, f"page_size {a.page_size} (only 4 KiB is emulated)")
    if a.compr_kind == K.NV_KIND_INVALID and a.incompr_kind == K.NV_KIND_INVALID:
      raise self._refuse(errno.EINVAL, "neither a compressible nor an incompressible kind")
    # top-down first fit below the end of the AS, skipping reservations and existing maps
    size, top = _round_page(h.size), as_.end
    for s, e in sorted([(m.va, m.va + m.size) for m in as_.maps] + as_.reservations, reverse=True) + [(as_.start, as_.start)]:
      if top - size >= e and top - size >= as_.start: break
      top = min(top, s)
    else: raise _err(errno.ENOMEM, "GPU VA space exhausted")   # "failed to allocate va space" (K: MAP_BUFFER_EX)
    va = top - size
    if va < as_.start or self._overlaps(as_, va, va + size): raise _err(errno.ENOMEM, "GPU VA space exhausted")
    bisect.insort(as_.maps, Mapping(va, size, h, bool(a.flags & K.MAP_FLAGS_CACHEABLE)), key=lambda x: x.va)
    h.refs += 1
    a.offset = va

  def _AS_UNMAP_BUFFER(self, as_:AddressSpace, a):
    m = next((m for m in as_.maps if m.va == a.offset), None)
    if m is None:   # the kernel returns 0 (ioctl_as.c:136-138): a guard, K.STRICTER_THAN_KERNEL
      raise self._refuse(errno.EINVAL, f"UNMAP of {a.offset:#x}, which is not mapped")
    as_.maps.remove(m)
    self._unref(m.handle)

  def _AS_BIND_CHANNEL(self, as_:AddressSpace, a):   # ioctl_as.c:63-65, :67-70
    kind, ch = self.fds.get(a.channel_fd, (None, None))
    if kind != "channel": raise self._refuse(errno.EINVAL, "AS BIND_CHANNEL: not a channel fd")
    if ch.as_ is not None: raise self._refuse(errno.EINVAL, "channel already bound to an address space")
    ch.as_ = as_
    as_.channels.add(ch.fd)

  # ---------------- TSG ioctls ----------------
  def _TSG_CREATE_SUBCONTEXT(self, tsg:TSG, a):
    """ioctl_tsg.c:853-894 and tsg.c's VEID allocator: SYNC is VEID 0, ASYNC the first free of 1..63, else the SYNC one."""
    if a.type not in (K.SUBCONTEXT_TYPE_SYNC, K.SUBCONTEXT_TYPE_ASYNC): raise self._refuse(errno.EINVAL, f"subcontext type {a.type}")
    kind, as_ = self.fds.get(a.as_fd, (None, None))
    if kind != "as": raise self._refuse(errno.EINVAL, "CREATE_SUBCONTEXT: as_fd is not an address space")
    free_async = [v for v in range(K.ASYNC_VEID_BASE, K.MAX_SUBCTX_COUNT) if v not in tsg.veids]
    if a.type == K.SUBCONTEXT_TYPE_ASYNC and free_async: veid = free_async[0]
    elif K.SYNC_VEID not in tsg.veids: veid = K.SYNC_VEID
    else: raise self._refuse(errno.ENOSPC, "no VEID left in this TSG")
    tsg.veids[veid] = as_
    a.veid = veid

  def _TSG_BIND_CHANNEL_EX(self, tsg:TSG, a):
    """ioctl_tsg.c:107-175 (K: BIND_CHANNEL_EX)."""
    kind, ch = self.fds.get(a.channel_fd, (None, None))
    if kind != "channel": raise self._refuse(errno.EINVAL, "BIND_CHANNEL_EX: not a channel fd")
    if a.subcontext_id >= K.MAX_SUBCTX_COUNT: raise self._refuse(errno.EINVAL, f"subcontext {a.subcontext_id} out of range")
    if a.subcontext_id == K.SYNC_VEID and K.SYNC_VEID not in tsg.veids: tsg.veids[K.SYNC_VEID] = ch.as_   # tsg.c:375-384
    if tsg.veids.get(a.subcontext_id) is not ch.as_:
      raise self._refuse(errno.EINVAL, f"channel AS does not match subcontext {a.subcontext_id}'s (not created, or AS BIND_CHANNEL missing)")
    if ch.tsg is not None: raise self._refuse(errno.EINVAL, "channel is already bound to a TSG")
    ch.tsg = tsg
    tsg.channels.add(ch.fd)

  # ---------------- channel ioctls ----------------
  def _CHANNEL_WDT(self, ch:Channel, a):   # ioctl_channel.c:305-341
    status = a.wdt_status & (K.WDT_DISABLE | K.WDT_ENABLE)
    if ch.deterministic and status != K.WDT_DISABLE: raise self._refuse(errno.EINVAL, "a deterministic channel's watchdog stays disabled")
    if status not in (K.WDT_DISABLE, K.WDT_ENABLE): raise self._refuse(errno.EINVAL, f"wdt_status {a.wdt_status:#x}: neither DISABLE nor ENABLE")
    ch.wdt_enabled = status == K.WDT_ENABLE

  def _CHANNEL_SETUP_BIND(self, ch:Channel, a):
    """ioctl_channel.c:1284-1343 -> channel.c channel_setup_bind_prechecks() -> linux-channel.c usermode buffers (K: SETUP_BIND)."""
    flags, n = a.flags & K.SETUP_BIND_FLAGS_TRANSLATED, a.num_gpfifo_entries   # unknown flag bits are dropped, not refused
    usermode, deterministic = bool(flags & K.SETUP_BIND_FLAGS_USERMODE_SUPPORT), bool(flags & K.SETUP_BIND_FLAGS_DETERMINISTIC)
    least = K.SETUP_BIND_MIN_ENTRIES_USERMODE if usermode else K.SETUP_BIND_MIN_ENTRIES_KERNEL
    if n < least or n & (n - 1) or n > 0xffffffff // K.GPFIFO_ENTRY_SIZE:   # ioctl_channel.c:1306-1336 (U32_MAX / 8)
      raise self._refuse(errno.EINVAL, f"num_gpfifo_entries {n}: not a power of two in range")
    if ch.as_ is None: raise self._refuse(errno.EINVAL, "SETUP_BIND before AS BIND_CHANNEL")
    if ch.tsg is None: raise self._refuse(errno.EINVAL, "SETUP_BIND before TSG BIND_CHANNEL_EX")
    if ch.bound: raise self._refuse(errno.EEXIST, "GPFIFO already set up")
    if deterministic and ch.wdt_enabled:
      raise self._refuse(errno.EINVAL, "deterministic channel with a live watchdog: disable it (CHANNEL_WDT) first")
    if usermode and not deterministic: raise self._refuse(errno.EINVAL, "usermode submit needs DETERMINISTIC")
    ring = userd = None
    if usermode:
      if a.gpfifo_dmabuf_fd == 0 or a.userd_dmabuf_fd == 0: raise self._refuse(errno.EINVAL, "dma-buf fd 0")
      if a.userd_dmabuf_offset or a.gpfifo_dmabuf_offset: raise self._refuse(errno.EINVAL, "dma-buf offsets must be 0")
      ring = self._dmabuf(a.gpfifo_dmabuf_fd, "SETUP_BIND gpfifo")
      if ring.size < max(K.GPFIFO_MIN_BYTES, n * K.GPFIFO_ENTRY_SIZE):
        raise self._refuse(errno.EINVAL, f"ring dma-buf {ring.size:#x} < max(4 KiB, entries*8)")
      userd = self._dmabuf(a.userd_dmabuf_fd, "SETUP_BIND userd")
      if ring.size > MAX_RING_BYTES:
        raise self._refuse(errno.EFBIG, f"ring dma-buf of {ring.size:#x} bytes: a 3 MiB ring froze a real Orin at ALLOC_OBJ_CTX (facts, pitfall 1)")
      if userd.size < K.USERD_SIZE: raise self._refuse(errno.EINVAL, "USERD must be at least 4 KiB")
    ch.bound, ch.deterministic, ch.entries = True, deterministic, n
    a.gpfifo_gpu_va, a.userd_gpu_va, a.usermode_mmio_gpu_va = 0, 0, 0
    if usermode:   # only usermode channels have the ring here and a work submit token (the doorbell); kernel-mode submit is not emulated
      ch.ring, ch.userd = ring, userd
      ch.drained_ring = ctypes.string_at(ring.phys, n * 8)
      ch.token, self._next_token = self._next_token, self._next_token + 1
      self.channels[ch.token] = ch
      a.work_submit_token = ch.token

  def _CHANNEL_ALLOC_OBJ_CTX(self, ch:Channel, a):   # gr_setup.c:127-131, :134-137, :193-195; no SETUP_BIND needed
    if ch.as_ is None: raise self._refuse(errno.EINVAL, "ALLOC_OBJ_CTX before AS BIND_CHANNEL")
    if a.class_num not in (K.COMPUTE_CLASS, K.DMA_CLASS): raise self._refuse(errno.EINVAL, f"class {a.class_num:#x} not supported on ga10b")
    if ch.tsg is None: raise self._refuse(errno.EINVAL, "ALLOC_OBJ_CTX before TSG BIND_CHANNEL_EX")
    ch.classes.add(a.class_num)
    a.obj_id = len(ch.classes)

  def _CHANNEL_SET_ERROR_NOTIFIER(self, ch:Channel, a):   # ioctl_channel.c:359-408
    if a.mem == 0: raise self._refuse(errno.EINVAL, "error notifier: invalid memory handle 0")
    h = self._dmabuf(a.mem, "SET_ERROR_NOTIFIER", code=errno.EINVAL)
    if a.offset + K.NOTIFICATION_SIZE > _round_page(h.size): raise self._refuse(errno.EINVAL, "error notifier outside its buffer")
    ch.notifier = (h, a.offset)

  def _channel_closed(self, ch:Channel):
    if ch.as_ is not None: ch.as_.channels.discard(ch.fd)
    if ch.tsg is not None: ch.tsg.channels.discard(ch.fd)
    self.channels.pop(ch.token, None)

  # ---------------- nvmap ioctls ----------------
  def _NVMAP_CREATE(self, _, a):   # nvmap_ioctl.c:296-297 -> nvmap_create_handle() "if (!size) return ERR_PTR(-EINVAL)"
    if a.size_or_fd == 0: raise self._refuse(errno.EINVAL, "NVMAP_IOC_CREATE of 0 bytes")
    h = Handle(self._next_handle, a.size_or_fd, os.memfd_create("nvmap", os.MFD_CLOEXEC))
    self._next_handle += 1
    self.handles[h.id] = h
    a.handle = h.id

  def _NVMAP_ALLOC(self, _, a):
    """nvmap_ioctl.c:187-232 in its order (K: nvmap); the cache mode is flags & NVMAP_HANDLE_CACHE_FLAG, never refused."""
    if a.align & (a.align - 1): raise self._refuse(errno.EINVAL, f"align {a.align:#x} must be a power of two")   # below a page nvmap rounds up
    h = self.handles.get(a.handle) if a.handle else None
    if h is None: raise self._refuse(errno.EINVAL, f"NVMAP_IOC_ALLOC of unknown handle {a.handle:#x}")
    if not a.heap_mask & K.NVMAP_HEAP_IOVMM:   # no carveout heap in the fake; SYSMEM answers ENOMEM on Orin (FACTS:39)
      raise self._refuse(errno.ENOMEM, f"heap mask {a.heap_mask:#x} has no memory here; use IOVMM")
    size = _round_page(h.size)
    if self._used + size > self.memory_limit: raise _err(errno.ENOMEM, "out of (fake) memory")   # nvmap_dev.c:619-623: more than RAM
    if h.allocated: raise self._refuse(errno.EEXIST, "handle already allocated")
    os.ftruncate(h.memfd, size)
    h.phys = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, h.memfd, 0)
    h.allocated, h.cache, self._used = True, a.flags & K.NVMAP_HANDLE_CACHE_FLAG, self._used + size

  def _NVMAP_GET_FD(self, _, a):
    h = self.handles.get(a.handle)
    if h is None: raise self._refuse(errno.EBADF, f"GET_FD of {a.handle:#x}, which is no nvmap handle nor fd")   # nvmap_ioctl.c:170-172
    if not h.allocated: raise self._refuse(errno.EINVAL, "GET_FD of an unallocated handle")   # K.STRICTER_THAN_KERNEL
    a.size_or_fd = self._new_fd("dmabuf", h, fd=os.dup(h.memfd))   # the fd comes back in the first u32
    h.refs += 1

  def _NVMAP_FREE(self, _, handle:int):
    # The handle's pages stay alive while a dma-buf fd or a GPU mapping refers to them (the memfd and its dups here).
    h = self.handles.pop(handle, None)
    if h is None: return   # nvmap_ioctl.c:585-597: handle 0 or an unknown handle is a no-op that returns 0
    self._unref(h)

  def _unref(self, h:Handle):
    h.refs -= 1
    if h.refs: return
    if h.allocated:
      _libc.munmap(h.phys, _round_page(h.size))
      self._used -= _round_page(h.size)
    h.phys, h.allocated = 0, False
    os.close(h.memfd)

  # ---------------- GPU memory access (through the GPU's page tables and, for CACHEABLE mappings, its L2) ----------------
  def _mapping(self, as_:AddressSpace, va:int, size:int) -> Mapping:
    i = bisect.bisect_right([m.va for m in as_.maps], va) - 1
    if i < 0 or va + size > (m:=as_.maps[i]).va + m.size: raise GPUFault(f"MMU fault: {size:#x} bytes at unmapped GPU VA {va:#x}")
    if m.handle.phys == 0: raise GPUFault(f"MMU fault: GPU VA {va:#x} maps memory that was never allocated")
    return m

  def _l2_page(self, m:Mapping, page:int) -> bytearray:
    if page not in m.l2: m.l2[page] = bytearray(ctypes.string_at(m.handle.phys + page * PAGE, PAGE))
    return m.l2[page]

  def gpu_read(self, as_:AddressSpace, va:int, size:int) -> bytes:
    m = self._mapping(as_, va, size)
    off = va - m.va
    if not m.cacheable: return ctypes.string_at(m.handle.phys + off, size)
    out = bytearray()
    while len(out) < size:
      page, po = divmod(off + len(out), PAGE)
      out += self._l2_page(m, page)[po:po + size - len(out)]
    return bytes(out)

  def gpu_write(self, as_:AddressSpace, va:int, data:bytes) -> None:
    m = self._mapping(as_, va, len(data))
    off = va - m.va
    ctypes.memmove(m.handle.phys + off, data, len(data))   # write-through to memory
    if m.cacheable:
      for page in range(off // PAGE, (off + len(data) - 1) // PAGE + 1):
        if page in m.l2:
          lo, hi = max(off, page * PAGE), min(off + len(data), (page + 1) * PAGE)
          m.l2[page][lo - page * PAGE:hi - page * PAGE] = data[lo - off:hi - off]

  def _rd(self, ch:Channel, va:int, fmt:str) -> int: return struct.unpack("<" + fmt, self.gpu_read(ch.as_, va, struct.calcsize(fmt)))[0]
  def _wr(self, ch:Channel, va:int, fmt:str, v:int) -> None: self.gpu_write(ch.as_, va, struct.pack("<" + fmt, v))

  # ---------------- the command processor ----------------
  def _pending(self) -> bool:
    """Some live channel has fetched work it could not finish, or published entries it has not fetched."""
    return any(ch.error is None and ch.ring is not None and ch.classes and (ch.pb is not None or ch.get != ch.visible_put)
               for ch in self.channels.values())

  def _note_blocked(self):   # call with the lock held, after the last chance to run the channels
    if self._pending(): self._blocked.set()

  def _cp_loop(self):
    while not self._stop.is_set():
      self._blocked.wait()
      if self._stop.wait(5e-4): return
      with self.lock:
        try: self._run_all()
        except Exception: pass   # faults are recorded on the channel; never let the thread die
        if not self._pending(): self._blocked.clear()   # under the lock: a doorbell that blocks again sets it after this

  def _run_all(self):
    progress = True
    while progress: progress = any([self._run_channel(ch) for ch in list(self.channels.values())])

  def _run_channel(self, ch:Channel) -> bool:
    """Run a channel until it is idle or blocked; returns whether anything was executed."""
    if ch.error is not None or ch.ring is None or not ch.classes: return False
    progress = False
    while True:
      if ch.pb is None:
        if ch.get == ch.visible_put: return progress
        entry = struct.unpack_from("<Q", ch.drained_ring, 8 * ch.get)[0]
        va, ndw = entry & ((1 << K.VA_BITS) - 1) & ~3, (entry >> K.GP_ENTRY_LENGTH_SHIFT) & K.GP_ENTRY_LENGTH_MASK
        try: ch.pb = [list(struct.unpack(f"<{ndw}I", self.gpu_read(ch.as_, va, ndw * 4))), 0, None]
        except GPUFault as e: return self._fault(ch, str(e))
      try:
        if not self._exec_pb(ch): return progress   # blocked on an acquire
      except GPUFault as e: return self._fault(ch, str(e))
      ch.pb, ch.get, progress = None, (ch.get + 1) % ch.entries, True
      ch.since_writeback += 1
      if ch.since_writeback >= self.gpget_writeback_every:   # GP_GET reaches USERD only now and then
        ctypes.c_uint32.from_address(ch.userd.phys + K.USERD_GP_GET_OFFSET).value = ch.get
        ch.since_writeback = 0

  def _fault(self, ch:Channel, msg:str, code:int=K.CHANNEL_FIFO_ERROR_MMU_ERR_FLT) -> bool:
    """The kernel's recovery: record the error in the notifier and kill the channel (it never runs again)."""
    ch.error = msg
    if ch.notifier is not None:
      h, off = ch.notifier
      ctypes.c_uint32.from_address(h.phys + off + K.NOTIFICATION_INFO32).value = code
      ctypes.c_uint16.from_address(h.phys + off + K.NOTIFICATION_STATUS).value = K.NOTIFICATION_STATUS_ERROR
    return True

  def _exec_pb(self, ch:Channel) -> bool:
    dws, pos, pending = ch.pb
    while pos < len(dws) or pending:
      if pending is None:
        hdr = dws[pos]
        if hdr == K.PB_NOP:   # a zero dword is a no-op; bound queues are submitted with their page's zero padding
          pos += 1
          continue
        if (hdr >> K.PB_OPCODE_SHIFT) != K.PB_OPCODE_INC_METHOD: raise GPUFault(f"pushbuffer header {hdr:#x}: only incrementing methods are emulated")
        count, subc = (hdr >> K.PB_COUNT_SHIFT) & K.PB_COUNT_MASK, (hdr >> K.PB_SUBCHANNEL_SHIFT) & K.PB_SUBCHANNEL_MASK
        mthd = (hdr & K.PB_ADDRESS_MASK) << 2
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
    if mthd < K.HOST_METHOD_LIMIT:   # host methods, valid on any subchannel
      if mthd in (K.HOST_SEM_ADDR_LO, K.HOST_SEM_ADDR_HI, K.HOST_SEM_PAYLOAD_LO, K.HOST_SEM_PAYLOAD_HI): ch.sem[mthd] = val
      elif mthd == K.HOST_SEM_EXECUTE: return self._host_semaphore(ch, val)
      elif mthd == K.HOST_NON_STALL_INTR: pass   # nothing listens on Tegra
      elif mthd == K.HOST_SET_OBJECT: ch.objects[subc] = val
      else: raise GPUFault(f"unknown host method {mthd:#x}")
      return True
    if subc not in ch.objects: raise GPUFault(f"method {mthd:#x} on subchannel {subc} before SET_OBJECT")
    if ch.objects[subc] not in ch.classes: raise GPUFault(f"subchannel {subc} uses class {ch.objects[subc]:#x} without ALLOC_OBJ_CTX")
    if ch.objects[subc] == K.COMPUTE_CLASS: self._compute_method(ch, mthd, val)
    elif ch.objects[subc] == K.DMA_CLASS: self._copy_method(ch, mthd, val)
    return True

  def _host_semaphore(self, ch:Channel, ex:int) -> bool:
    addr = ch.sem.get(K.HOST_SEM_ADDR_LO, 0) | ((ch.sem.get(K.HOST_SEM_ADDR_HI, 0) & K.SEM_ADDR_HI_MASK) << 32)
    payload = ch.sem.get(K.HOST_SEM_PAYLOAD_LO, 0) | (ch.sem.get(K.HOST_SEM_PAYLOAD_HI, 0) << 32)
    op = ex & K.SEM_EXECUTE_OPERATION_MASK
    wide, timestamp = (ex >> K.SEM_EXECUTE_PAYLOAD_SIZE_BIT) & 1, (ex >> K.SEM_EXECUTE_RELEASE_TIMESTAMP_BIT) & 1
    if addr % (8 if wide else K.SEM_ADDR_LO_ALIGN): raise GPUFault(f"misaligned semaphore {addr:#x}")   # 8 for 64 bit: a guard
    fmt = "Q" if wide else "I"
    if op == K.SEM_OP_RELEASE:   # after all prior work, which in this emulation has completed
      self.releases.append((addr, payload))   # recorded before it is visible: a CPU that sees the value sees the record
      if timestamp: self._wr(ch, addr + K.SEM_TIMESTAMP_OFFSET, "Q", time.perf_counter_ns())
      self._wr(ch, addr, fmt, payload & (0xffffffffffffffff if wide else 0xffffffff))
      return True
    cur = self._rd(ch, addr, fmt)
    if op == K.SEM_OP_ACQ_CIRC_GEQ: return ((cur - payload) & ((1 << 64) - 1 if wide else 0xffffffff)) < (1 << (63 if wide else 31))
    if op == K.SEM_OP_ACQ_AND: return (cur & payload) != 0
    if op == K.SEM_OP_ACQ_NOR: return (~(cur | payload) & 0xffffffff) != 0
    raise GPUFault(f"semaphore operation {op} not emulated")

  def _copy_method(self, ch:Channel, mthd:int, val:int):
    ch.copy[mthd] = val
    if mthd != K.DMA_LAUNCH: return
    c = ch.copy
    if (xfer:=val & K.DMA_LAUNCH_TRANSFER_MASK) != 0:
      if xfer != K.DMA_LAUNCH_TRANSFER_NON_PIPELINED: raise GPUFault("only non-pipelined copies are emulated")
      src = (c.get(K.DMA_OFFSET_IN_HI, 0) << 32) | c.get(K.DMA_OFFSET_IN_LO, 0)
      dst = (c.get(K.DMA_OFFSET_OUT_HI, 0) << 32) | c.get(K.DMA_OFFSET_OUT_LO, 0)
      if (n:=c.get(K.DMA_LINE_LENGTH_IN, 0)): self.gpu_write(ch.as_, dst, self.gpu_read(ch.as_, src, n))
      self.copies += 1
    if (sem:=(val >> K.DMA_LAUNCH_SEMAPHORE_SHIFT) & K.DMA_LAUNCH_SEMAPHORE_MASK) != 0:
      addr, payload = (c.get(K.DMA_SEM_ADDR_HI, 0) << 32) | c.get(K.DMA_SEM_ADDR_LO, 0), c.get(K.DMA_SEM_PAYLOAD, 0)
      self.releases.append((addr, payload))
      if sem == K.DMA_LAUNCH_SEMAPHORE_FOUR_WORD:   # payload, 0, then the timestamp at K.SEM_TIMESTAMP_OFFSET
        self.gpu_write(ch.as_, addr, struct.pack("<Q", payload) + struct.pack("<Q", time.perf_counter_ns()))
      else: self._wr(ch, addr, "I", payload)

  def _compute_method(self, ch:Channel, mthd:int, val:int):
    ch.copy[("c", mthd)] = val
    if mthd == K.COMPUTE_SEND_PCAS_A: ch.sem["qmd"] = val << K.QMD_ADDRESS_SHIFT
    elif mthd == K.COMPUTE_SEND_SIGNALING_PCAS2_B:
      qmd_va, seen = ch.sem.get("qmd"), 0
      while qmd_va is not None:
        qmd_va, seen = self._launch(ch, qmd_va), seen + 1
        if seen > K.QMD_CHAIN_LIMIT: raise GPUFault("QMD dependency chain loops")

  def _launch(self, ch:Channel, qmd_va:int) -> int|None:
    """Read one QMD (V03, Ampere), run its kernel, perform its embedded releases; return the dependent QMD, if any."""
    q = int.from_bytes(self.gpu_read(ch.as_, qmd_va, K.QMD_SIZE), "little")
    f = _qmd_fields()
    def rd(name):
      hi, lo = f[name]
      return (q >> lo) & ((1 << (hi - lo + 1)) - 1)
    if rd("QMD_MAJOR_VERSION") != K.QMD_MAJOR_VERSION:
      raise GPUFault(f"QMD at {qmd_va:#x}: major version {rd('QMD_MAJOR_VERSION')} != {K.QMD_MAJOR_VERSION}")
    prog = (rd("PROGRAM_ADDRESS_UPPER") << 32) | rd("PROGRAM_ADDRESS_LOWER")
    if not rd("CONSTANT_BUFFER_VALID_0"): raise GPUFault("QMD without constant buffer 0 (kernel arguments)")
    cb0 = (rd("CONSTANT_BUFFER_ADDR_UPPER_0") << 32) | rd("CONSTANT_BUFFER_ADDR_LOWER_0")
    cb0_size = rd("CONSTANT_BUFFER_SIZE_SHIFTED4_0")
    grid = (rd("CTA_RASTER_WIDTH"), rd("CTA_RASTER_HEIGHT"), rd("CTA_RASTER_DEPTH"))
    block = (rd("CTA_THREAD_DIMENSION0"), rd("CTA_THREAD_DIMENSION1"), rd("CTA_THREAD_DIMENSION2"))
    if min(grid) < 1 or min(block) < 1 or block[0] * block[1] * block[2] > K.MAX_THREADS_PER_BLOCK:
      raise GPUFault(f"QMD at {qmd_va:#x}: bad launch grid {grid} block {block}")
    if rd("SHARED_MEMORY_SIZE") > K.MAX_SHARED_MEMORY: raise GPUFault("QMD asks for more shared memory than a ga10b SM has")
    self.launches.append({"qmd": qmd_va, "program": prog, "cbuf0": cb0, "grid": grid, "block": block,
                          "qmd_releases": [rd(f"RELEASE{i}_ENABLE") for i in range(2)]})
    self._run_kernel(ch, prog, cb0, cb0_size, grid, block)
    for i in range(2):
      if rd(f"RELEASE{i}_ENABLE"):
        addr = (rd(f"RELEASE{i}_ADDRESS_UPPER") << 32) | rd(f"RELEASE{i}_ADDRESS_LOWER")
        payload = (rd(f"RELEASE{i}_PAYLOAD_UPPER") << 32) | rd(f"RELEASE{i}_PAYLOAD_LOWER")
        self.releases.append((addr, payload))
        self._wr(ch, addr, "Q", payload)
    return (rd("DEPENDENT_QMD0_POINTER") << K.QMD_ADDRESS_SHIFT) if rd("DEPENDENT_QMD0_ENABLE") else None

  def _program(self, ch:Channel, prog_va:int):
    head = self.gpu_read(ch.as_, prog_va, len(PROGRAM_MAGIC) + 4)
    if head[:len(PROGRAM_MAGIC)] != PROGRAM_MAGIC: raise GPUFault(f"no program at GPU VA {prog_va:#x} (illegal instruction)")
    blob = self.gpu_read(ch.as_, prog_va + len(head), struct.unpack_from("<I", head, len(PROGRAM_MAGIC))[0])
    if (prg:=self._programs.get(blob)) is None:
      from tinygrad.runtime.ops_python import PythonProgram
      from tinygrad.uop.ops import Ops
      from tinygrad.dtype import AddrSpace
      prg = PythonProgram(None, _Lib(blob))
      prg.params = [u for u in prg.uops if u.op is Ops.PARAM]
      prg.buf_params = [u for u in prg.params if u.addrspace is not AddrSpace.ALU]
      prg.val_params = [u for u in prg.params if u.addrspace is AddrSpace.ALU]
      self._programs[blob] = prg
    return prg

  def _run_kernel(self, ch:Channel, prog_va:int, cb0:int, cb0_size:int, grid, block):
    """Constant buffer 0 holds, from K.KERNEL_PARAM_OFFSET, one 64-bit GPU VA per buffer and then the integer values."""
    prg = self._program(ch, prog_va)
    nbufs, off = len(prg.buf_params), K.KERNEL_PARAM_OFFSET
    vas = [self._rd(ch, cb0 + off + 8 * i, "Q") for i in range(nbufs)]
    vals, voff = [], off + 8 * nbufs
    for u in prg.val_params:
      voff = (voff + u.dtype.itemsize - 1) // u.dtype.itemsize * u.dtype.itemsize
      vals.append(self._rd(ch, cb0 + voff, u.dtype.fmt))
      voff += u.dtype.itemsize
    if voff > cb0_size: raise GPUFault(f"kernel arguments end at {voff:#x}, beyond constant buffer 0 ({cb0_size:#x} bytes)")
    views, writeback = [], []
    for va in vas:
      m = self._mapping(ch.as_, va, 1)
      n = (m.va + m.size - va) & ~7
      if m.cacheable:   # the kernel sees the GPU's cached copy; what it writes goes through to memory afterwards
        buf = bytearray(self.gpu_read(ch.as_, va, n))
        writeback.append((va, buf, bytes(buf)))
        views.append(memoryview(buf))
      else: views.append(memoryview((ctypes.c_char * n).from_address(m.handle.phys + va - m.va)).cast("B"))
    if (batched:=self._batched_program(prg, grid, block)) is not None:
      prg, passes, per_pass = batched
      grid, block = (passes, 1, 1), (block[0] * block[1] * block[2], per_pass, 1)
    try: prg(*views, global_size=grid, local_size=block, vals=tuple(vals))
    except IndexError as e: raise GPUFault(f"MMU fault in kernel: {e}") from e
    for va, buf, before in writeback:
      if buf != before: self.gpu_write(ch.as_, va, bytes(buf))
    self.kernels_run += 1

  LANES_PER_PASS = 4096   # threads the emulator steps together in one pass over the UOps (a Python list per value)

  def _batched_program(self, prg, grid, block):
    """tinygrad's emulator runs one block per pass over the UOps, all its threads in lockstep; its cost is mostly per UOp
    executed, so a grid of small blocks costs a pass per block. When blocks cannot see each other -- no shared memory,
    no barrier, loop bounds that do not depend on the thread or block index -- several blocks are the same as one wider
    block: `lidx1` becomes the block within the pass, `gidx0` the pass, and every original gidx/lidx is computed from
    them. GPU blocks run in no defined order, so a kernel without races gives the same memory either way."""
    key = (id(prg), grid, block)
    if key in self._batched: return self._batched[key]
    self._batched[key] = None
    from tinygrad.uop.ops import Ops, UOp
    from tinygrad.dtype import AddrSpace, dtypes
    from tinygrad.runtime.ops_python import PythonProgram
    uops, nblocks, threads = prg.uops, grid[0] * grid[1] * grid[2], block[0] * block[1] * block[2]
    per_pass = max(d for d in range(1, min(nblocks, max(1, self.LANES_PER_PASS // threads)) + 1) if nblocks % d == 0)
    if per_pass == 1: return None
    for u in uops:
      if u.op in (Ops.BARRIER, Ops.WMMA) or (u.op in (Ops.PARAM, Ops.BUFFER) and u.addrspace is AddrSpace.LOCAL): return None
      if u.op is Ops.SPECIAL and not (u.arg[:4] in ("gidx", "lidx") and u.arg[4:] in ("0", "1", "2")): return None
      uniform = [u.src[0]] if u.op is Ops.RANGE else [u.src[2]] if u.op is Ops.END and len(u.src) == 3 else []
      if any(x.op is Ops.SPECIAL for v in uniform for x in v.toposort()): return None
    head:list = []   # the index arithmetic, placed before the program's own UOps
    def emit(op, *src, arg=None) -> UOp:
      head.append(u:=UOp(op, dtypes.int, tuple(x if isinstance(x, UOp) else emit(Ops.CONST, arg=x) for x in src), arg))
      return u
    def split(flat:UOp, dims) -> list:   # a flat index -> the index in each dimension, dimension 0 fastest
      out, stride, total = [], 1, dims[0] * dims[1] * dims[2]
      for n in dims:
        v = flat if stride == 1 else emit(Ops.CDIV, flat, stride)
        out.append(v if n * stride == total else emit(Ops.CMOD, v, n))
        stride *= n
      return out
    t, b = emit(Ops.SPECIAL, threads, arg="lidx0"), emit(Ops.SPECIAL, per_pass, arg="lidx1")
    g = emit(Ops.ADD, emit(Ops.MUL, emit(Ops.SPECIAL, nblocks // per_pass, arg="gidx0"), per_pass), b)
    index = {"lidx": split(t, block), "gidx": split(g, grid)}
    new:dict = {}
    for u in uops:
      new[u] = index[u.arg[:4]][int(u.arg[4])] if u.op is Ops.SPECIAL else u.replace(src=tuple(new[x] for x in u.src))
    body = [new[u] for u in uops if u.op is not Ops.SPECIAL]
    self._batched[key] = (PythonProgram(None, _Lib(pickle.dumps(head + body))), nblocks // per_pass, per_pass)
    return self._batched[key]

@dataclass
class _Lib:
  lib: bytes

def _round_page(n:int) -> int: return (n + PAGE - 1) & ~(PAGE - 1)

_QMD_FIELDS:dict|None = None
def _qmd_fields() -> dict:
  """QMD V03 bit positions (open-gpu-doc classes/compute/clc6c0qmd.h, as tinygrad's autogen transcribes them)."""
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

def program_blob(uops) -> bytes:
  """What the fake compiler places in `.text.<kernel>`: a magic, a length, the pickled UOps the Python emulator runs."""
  data = pickle.dumps(uops)
  return PROGRAM_MAGIC + struct.pack("<I", len(data)) + data
