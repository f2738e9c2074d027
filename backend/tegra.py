"""The Tegra interface and NVDevice for tinygrad 0.14.0 (imports tinygrad; `backend/__init__.py` does not).

tinygrad's NV runtime talks to a GPU through an "interface" object (`NVKIface` for the desktop driver, `PCIIface` for its
own driver). `TEGRAIface` is a third one: it receives the same calls -- rm_alloc of RM classes, rm_control commands,
alloc/free/map of memory, the usermode doorbell page -- and carries them out with nvgpu/nvmap ioctls. What an interface
cannot absorb (hard-coded VA windows, the 3 MiB shared GPFIFO area, QMD-embedded releases, the unsynchronised scratch
realloc, the RM debugger on a hang) is overridden in the `NVDevice` subclass below, which keeps tinygrad's class name so
`Device["NV"]` finds it.
"""
from __future__ import annotations
import ctypes, errno, os, sys, time
from dataclasses import dataclass
from tinygrad.helpers import round_up, getenv
from tinygrad.runtime import ops_nv
from tinygrad.runtime.ops_nv import NVComputeQueue, NVCopyQueue, NVAllocator, NVProgram, NVSignal, GPFifo, nv_gpu
from tinygrad.runtime.support.hcq import HCQBuffer, HCQCompiled, MMIOInterface
from tinygrad.renderer.ptx import PTXRenderer
from tinygrad.renderer.cstyle import CUDARenderer, NVCCRenderer
from tinygrad.renderer.nir import NAKRenderer
from backend import uapi as U, devio, TEGRA_NODES

# The GPU VA layout. tinygrad's desktop windows (0x7293/0x7294 << 32) do not fit in 40 bits; these do, and they are
# reserved with ALLOC_SPACE before anything else is mapped so the kernel's top-down allocator never places a buffer there.
LOCAL_MEM_WINDOW, SHARED_MEM_WINDOW, WINDOW_SIZE = 0xFD00000000, 0xFE00000000, 1 << 30
VA_START, VA_END = 2 << 20, (1 << 40) - (2 << 20)
GPFIFO_ENTRIES = getenv("TEGRA_GPFIFO_ENTRIES", 1024)   # 8 KiB ring per channel: the size known to work on hardware
# GPU L2 caching (MAP_BUFFER_EX CACHEABLE) for buffers the CPU never touches. Off: every hardware-proven implementation maps
# with flags 0, and the Orin's coherence is one-way (the GPU snoops CPU caches; CPU stores do not invalidate GPU L2 lines).
# Buffers the CPU reads or writes (kernel arguments, queues, staging, signals) are never CACHEABLE, whatever this says.
GPU_CACHEABLE = getenv("TEGRA_GPU_CACHEABLE", 0)
SUPPORTED_L4T = "36"   # L4T r36 = JetPack 6: the struct layouts in backend/uapi.py are r36's

class TegraError(Exception):
  """A Tegra driver refusal other than ENOMEM. Deliberately not a RuntimeError: tinygrad's allocator rewrites
  RuntimeErrors into a generic "Allocation failed" MemoryError, which would hide the errno and the hint."""

def _check(e:OSError, what:str):
  """Turn a failed ioctl into the exception a tinygrad user can act on (ENOMEM must be MemoryError: the LRU cache frees
  and retries on it)."""
  name = devio.errno_name(e)
  if e.errno == errno.ENOMEM: raise MemoryError(f"{what}: out of GPU memory (ENOMEM from the Tegra driver)") from e
  hint = {errno.EBUSY: "the GPU or this resource is in use -- another process may hold the doorbell page; check `sudo fuser /dev/nvgpu/igpu0/*`",
          errno.EINVAL: "the driver rejected the arguments -- see `sudo dmesg | grep -i nvgpu` for which one",
          errno.EACCES: "permission denied -- add your user to the 'video' group", errno.EPERM: "permission denied -- add your user to 'video'"}
  raise TegraError(f"{what} failed with {name}: {hint.get(e.errno, e.strerror)}") from e

def l4t_problem(release:str|None) -> str|None:
  """One line when /etc/nv_tegra_release names another L4T major release than r36 (None: fine or unknown)."""
  if not release: return None
  major = release.split("R", 1)[1].split()[0] if "R" in release else "?"
  if major == SUPPORTED_L4T: return None
  return (f"L4T R{major} found ({release.strip().lstrip('# ').split(',')[0]}); this backend needs L4T r{SUPPORTED_L4T} (JetPack 6): "
          "other releases lay out the nvgpu structs differently")

@dataclass
class TegraMem:
  handle: int            # nvmap handle (bit 31 set)
  dmabuf_fd: int
  size: int
  gpu_va: int|None
  cpu_addr: int|None
  is_signal_page: bool = False
  @property
  def hMemory(self): return self.handle   # tinygrad reads buf.meta.hMemory

@dataclass
class TegraChannel:
  fd: int
  ring: HCQBuffer
  userd: HCQBuffer
  notifier: HCQBuffer
  entries: int
  token: int = 0
  notifier_ok: bool = False

@dataclass
class ChannelParams:   # what rm_alloc(gpfifo_class) needs on Tegra, instead of NV_CHANNELGPFIFO_ALLOCATION_PARAMETERS
  ctxshare: int
  entries: int

class TEGRAIface:
  """tinygrad's NV interface contract, implemented with nvgpu/nvmap ioctls. Selected by DEV=TEGRA+NV."""
  gpu_instance, count, viddec_class = 0, 1, None
  _warned_notifier = False

  def __init__(self, dev, device_id:int):
    self.io, self.dev, self.device_id = devio.get_io(), dev, device_id
    if (missing:=[p for p in TEGRA_NODES if not self.io.exists(p)]): raise TegraError(f"Tegra device node {missing[0]} is missing (not a Jetson?)")
    if device_id != 0: raise TegraError(f"the Orin has one GPU; NV:{device_id} does not exist")
    if (problem:=l4t_problem(self.io.l4t_release())): raise TegraError(problem)
    self.objects:dict[int, tuple[str, object]] = {}
    self.buffers:dict[int, HCQBuffer] = {}     # nvmap handle -> live buffer, for teardown
    self.channels:list[TegraChannel] = []
    self.channel_fds:list[int] = []            # every channel fd opened, closed on teardown even if its bring-up failed
    self.usermode_addr:int|None = None
    self.ctrl_fd = self.nvmap_fd = self.as_fd = -1
    self.closed = False
    try: self._open()
    except BaseException:
      self.device_fini()   # every fd and buffer opened so far: a failed open must not leak
      raise

  def _open(self):
    try:
      self.ctrl_fd = self.io.open(TEGRA_NODES[0], os.O_RDWR | os.O_CLOEXEC)
      self.nvmap_fd = self.io.open(TEGRA_NODES[1], os.O_RDWR | os.O_CLOEXEC)
    except OSError as e: _check(e, f"opening {e.filename or 'the Tegra nodes'}")
    self.chars = U.nvgpu_gpu_characteristics()
    self._ioctl(self.ctrl_fd, U.NVGPU_GPU_IOCTL_GET_CHARACTERISTICS, U.nvgpu_gpu_get_characteristics(
      gpu_characteristics_buf_size=ctypes.sizeof(self.chars), gpu_characteristics_buf_addr=ctypes.addressof(self.chars)), "GET_CHARACTERISTICS")
    if not self.chars.flags & U.NVGPU_GPU_FLAGS_SUPPORT_USERMODE_SUBMIT: raise TegraError("this nvgpu does not support usermode submit")
    self.compute_class, self.gpfifo_class, self.dma_class = self.chars.compute_class, self.chars.gpfifo_class, self.chars.dma_copy_class
    # One address space for the process, with the shader local/shared windows reserved before any buffer is mapped.
    as_args = U.nvgpu_alloc_as_args(big_page_size=0, flags=U.NVGPU_GPU_IOCTL_ALLOC_AS_FLAGS_UNIFIED_VA, va_range_start=VA_START, va_range_end=VA_END)
    self._ioctl(self.ctrl_fd, U.NVGPU_GPU_IOCTL_ALLOC_AS, as_args, "ALLOC_AS")
    self.as_fd = as_args.as_fd
    self._new_object("as", self.as_fd)
    for window in (LOCAL_MEM_WINDOW, SHARED_MEM_WINDOW):
      self._ioctl(self.as_fd, U.NVGPU_AS_IOCTL_ALLOC_SPACE, U.nvgpu_as_alloc_space_args(pages=WINDOW_SIZE // 0x1000, page_size=0x1000,
        flags=U.NVGPU_AS_ALLOC_SPACE_FLAGS_FIXED_OFFSET, offset=window), f"ALLOC_SPACE at {window:#x}")
    self.root = self._new_object("root", None)

  # ---------------- plumbing ----------------
  def _ioctl(self, fd:int, request:int, arg, what:str):
    try: return self.io.ioctl(fd, request, arg)
    except OSError as e: _check(e, what)

  def _new_object(self, kind:str, obj) -> int:
    handle = 0xcafe0000 + len(self.objects)
    self.objects[handle] = (kind, obj)
    return handle

  # ---------------- the RM object model, mapped onto nvgpu ----------------
  def rm_alloc(self, parent:int, clss:int, params=None, root=None) -> int:
    if clss in (nv_gpu.NV01_DEVICE_0, nv_gpu.NV20_SUBDEVICE_0, nv_gpu.NV01_MEMORY_VIRTUAL): return self._new_object("rm", clss)  # no nvgpu object
    if clss == nv_gpu.FERMI_VASPACE_A: return self._new_object("vaspace", self.as_fd)   # created in __init__ (windows must be reserved first)
    if clss == nv_gpu.KEPLER_CHANNEL_GROUP_A:
      self._ioctl(self.ctrl_fd, U.NVGPU_GPU_IOCTL_OPEN_TSG, tsg:=U.nvgpu_gpu_open_tsg_args(), "OPEN_TSG")
      return self._new_object("tsg", tsg.tsg_fd)
    if clss == nv_gpu.FERMI_CONTEXT_SHARE_A:
      sub = U.nvgpu_tsg_create_subcontext_args(type=U.NVGPU_TSG_SUBCONTEXT_TYPE_ASYNC, as_fd=self.as_fd)
      self._ioctl(self.objects[parent][1], U.NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT, sub, "TSG CREATE_SUBCONTEXT")
      return self._new_object("subctx", (parent, sub.veid))
    if clss == self.gpfifo_class: return self._new_object("channel", self._open_channel(parent, params))
    if clss in (self.compute_class, self.dma_class):
      ch:TegraChannel = self.objects[parent][1]
      self._ioctl(ch.fd, U.NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX, U.nvgpu_alloc_obj_ctx_args(class_num=clss), f"ALLOC_OBJ_CTX({clss:#x})")
      return self._new_object("engine", clss)
    raise TegraError(f"RM class {clss:#x} has no nvgpu equivalent (no RM debugger/profiler/video on Tegra)")

  def rm_control(self, obj:int, cmd:int, params=None, **kwargs):
    if cmd == nv_gpu.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN:
      params.workSubmitToken = self.objects[obj][1].token
    elif cmd == nv_gpu.NV2080_CTRL_CMD_GR_GET_INFO:
      info = {nv_gpu.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_GPCS: self.chars.num_gpc, nv_gpu.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_TPC_PER_GPC:
              self.chars.num_tpc_per_gpc, nv_gpu.NV2080_CTRL_GR_INFO_INDEX_LITTER_NUM_SM_PER_TPC: 2,
              nv_gpu.NV2080_CTRL_GR_INFO_INDEX_MAX_WARPS_PER_SM: self.chars.sm_arch_warp_count, nv_gpu.NV2080_CTRL_GR_INFO_INDEX_SM_VERSION:
              self.chars.sm_arch_sm_version}
      arr = (nv_gpu.NV2080_CTRL_GR_INFO * params.grInfoListSize).from_address(params.grInfoList)
      for x in arr: x.data = info[x.index]
    elif cmd in (nv_gpu.NVA06C_CTRL_CMD_GPFIFO_SCHEDULE, nv_gpu.NVA06F_CTRL_CMD_GPFIFO_SCHEDULE, nv_gpu.NV2080_CTRL_CMD_FB_FLUSH_GPU_CACHE): pass
    elif cmd == nv_gpu.NV2080_CTRL_CMD_PERF_BOOST: self._perf_boost()  # SETUP_BIND already scheduled the channel; IO-coherent: no flush
    else: raise TegraError(f"RM control {cmd:#x} has no nvgpu equivalent")
    return params

  def _perf_boost(self):
    """No nvgpu ioctl raises clocks; pinning devfreq min=max needs root. Best effort, silent when not permitted."""
    base = "/sys/class/devfreq/17000000.gpu"
    try:
      with open(f"{base}/max_freq") as f: mx = f.read().strip()
      with open(f"{base}/min_freq", "w") as f: f.write(mx)
    except OSError: pass

  def _open_channel(self, ctxshare:int, params:ChannelParams) -> TegraChannel:
    """One channel: OPEN_CHANNEL -> AS bind -> TSG bind -> watchdog off -> ring + USERD -> SETUP_BIND. The order matters
    (the driver checks it), and each channel gets its own small ring: a large shared ring froze a real Orin."""
    tsg_handle, veid = self.objects[params.ctxshare][1]
    self._ioctl(self.ctrl_fd, U.NVGPU_GPU_IOCTL_OPEN_CHANNEL, op:=U.nvgpu_channel_open_args(runlist_id=-1), "OPEN_CHANNEL")
    fd = op.channel_fd
    self.channel_fds.append(fd)
    self._ioctl(self.as_fd, U.NVGPU_AS_IOCTL_BIND_CHANNEL, U.nvgpu_as_bind_channel_args(channel_fd=fd), "AS BIND_CHANNEL")
    self._ioctl(self.objects[tsg_handle][1], U.NVGPU_TSG_IOCTL_BIND_CHANNEL_EX, U.nvgpu_tsg_bind_channel_ex_args(channel_fd=fd, subcontext_id=veid),
                "TSG BIND_CHANNEL_EX")
    self._ioctl(fd, U.NVGPU_IOCTL_CHANNEL_WDT, U.nvgpu_channel_wdt_args(wdt_status=U.NVGPU_IOCTL_CHANNEL_DISABLE_WDT), "CHANNEL_WDT")
    entries = params.entries
    ring = self.alloc(max(0x1000, entries * 8), uncached=True, cpu_access=True, gpu_map=False)
    userd = self.alloc(U.USERD_SIZE, uncached=True, cpu_access=True, gpu_map=False)
    notifier = self.alloc(0x1000, uncached=True, cpu_access=True, gpu_map=False)
    ch = TegraChannel(fd, ring, userd, notifier, entries)
    self.channels.append(ch)
    sb = U.nvgpu_channel_setup_bind_args(num_gpfifo_entries=entries, userd_dmabuf_fd=userd.meta.dmabuf_fd, gpfifo_dmabuf_fd=ring.meta.dmabuf_fd,
      flags=U.NVGPU_CHANNEL_SETUP_BIND_FLAGS_DETERMINISTIC | U.NVGPU_CHANNEL_SETUP_BIND_FLAGS_USERMODE_SUPPORT)
    self._ioctl(fd, U.NVGPU_IOCTL_CHANNEL_SETUP_BIND, sb, "CHANNEL SETUP_BIND")
    ch.token = sb.work_submit_token
    # Best effort: no hardware-proven implementation uses the error notifier. Without it a hang still raises after the
    # timeout, just without a code.
    try:
      self._ioctl(fd, U.NVGPU_IOCTL_CHANNEL_SET_ERROR_NOTIFIER, U.nvgpu_set_error_notifier(offset=0, size=0x1000, mem=notifier.meta.dmabuf_fd),
                  "SET_ERROR_NOTIFIER")
      ch.notifier_ok = True
    except (TegraError, MemoryError) as e:
      if not TEGRAIface._warned_notifier: print(f"warning: tegra: no error notifier ({e}); carrying on without fault codes", file=sys.stderr)
      TEGRAIface._warned_notifier = True
    return ch

  # ---------------- usermode doorbell ----------------
  def setup_usermode(self):
    try: self.usermode_addr = self.io.mmap(self.ctrl_fd, U.USERMODE_PAGE_SIZE, 0)
    except OSError as e: _check(e, "mapping the usermode doorbell page")
    return self._new_object("usermode", None), MMIOInterface(self.usermode_addr, U.USERMODE_PAGE_SIZE, fmt='I')

  def ring_doorbell(self, token:int): self.io.doorbell(self.usermode_addr, U.USERMODE_DOORBELL_OFFSET, token)
  def store_barrier(self): self.io.store_barrier()

  def setup_vm(self, vaspace): pass            # UVM registration has no Tegra equivalent: nvgpu owns the page tables
  def setup_gpfifo_vm(self, gpfifo): pass
  def sleep(self, ms:int):
    """tinygrad calls this every poll once a wait has lasted 200 ms. Check the error notifier instead of sleeping 200 ms: a
    dead channel then raises at once, with its code, and a live long wait loses at most a millisecond per poll."""
    if (report:=self.read_error_notifier()): raise TegraError(hang_message(report))
    time.sleep(0.001)

  # ---------------- memory ----------------
  def alloc(self, size:int, host=False, uncached=False, cpu_access=False, contiguous=False, zero=False, gpu_map=True, **kwargs) -> HCQBuffer:
    """nvmap CREATE -> ALLOC -> GET_FD -> AS MAP_BUFFER_EX -> mmap.

    CPU side (nvmap cache mode): memory the CPU reads (data, staging) is INNER_CACHEABLE; memory the CPU only writes or
    polls (rings, USERD, signals) is WRITE_COMBINE. The GPU snoops CPU caches (IO coherence), so neither needs flushes.
    GPU side (MAP_BUFFER_EX flags): 0 for every buffer the CPU touches, because CPU stores do not invalidate GPU L2 lines;
    CACHEABLE only for GPU-only buffers and only with TEGRA_GPU_CACHEABLE=1."""
    size = round_up(max(size, 1), 0x1000)
    # NVAllocator passes host/cpu_access but drops `uncached`: host+cpu_access is how tinygrad asks for signal pages
    signal_page = host and cpu_access
    uncached = uncached or signal_page
    gpu_only = not (host or cpu_access or uncached)
    cache = U.NVMAP_HANDLE_WRITE_COMBINE if uncached else U.NVMAP_HANDLE_INNER_CACHEABLE
    self._ioctl(self.nvmap_fd, U.NVMAP_IOC_CREATE, cr:=U.nvmap_create_handle(size=size), f"NVMAP_IOC_CREATE({size:#x})")
    mem = TegraMem(cr.handle, -1, size, None, None, is_signal_page=signal_page)
    try:
      self._ioctl(self.nvmap_fd, U.NVMAP_IOC_ALLOC, U.nvmap_alloc_handle(handle=mem.handle, heap_mask=U.NVMAP_HEAP_IOVMM, align=0x1000,
        flags=(U.NVMAP_TAG << 16) | cache | (U.NVMAP_HANDLE_ZEROED_PAGES if zero else 0)), f"NVMAP_IOC_ALLOC({size:#x})")
      self._ioctl(self.nvmap_fd, U.NVMAP_IOC_GET_FD, fd_args:=U.nvmap_create_handle(handle=mem.handle), "NVMAP_IOC_GET_FD")
      mem.dmabuf_fd = fd_args.size
      if gpu_map:
        flags = U.NVGPU_AS_MAP_BUFFER_FLAGS_CACHEABLE if gpu_only and GPU_CACHEABLE else 0
        mp = U.nvgpu_as_map_buffer_ex_args(flags=flags, compr_kind=U.NV_KIND_INVALID,
                                           incompr_kind=0, dmabuf_fd=mem.dmabuf_fd, page_size=0x1000)
        self._ioctl(self.as_fd, U.NVGPU_AS_IOCTL_MAP_BUFFER_EX, mp, f"AS MAP_BUFFER_EX({size:#x})")
        mem.gpu_va = mp.offset
      if cpu_access or host:
        try: mem.cpu_addr = self.io.mmap(mem.dmabuf_fd, size, 0)
        except OSError as e: _check(e, f"mmap of a {size:#x}-byte buffer")
    except BaseException:
      self._release(mem)   # undo the steps that succeeded: a failed alloc must not leak a handle or an fd
      raise
    buf = HCQBuffer(mem.gpu_va if mem.gpu_va is not None else 0, size, meta=mem, owner=self.dev,
                    view=MMIOInterface(mem.cpu_addr, size, fmt='B') if mem.cpu_addr is not None else None)
    self.buffers[mem.handle] = buf
    return buf

  def _release(self, mem:TegraMem, keep_cpu_addr=False):
    """Free in the order the driver needs: GPU unmap, CPU munmap, close the dma-buf, then free the handle."""
    if mem.gpu_va is not None:
      self._ioctl(self.as_fd, U.NVGPU_AS_IOCTL_UNMAP_BUFFER, U.nvgpu_as_unmap_buffer_args(offset=mem.gpu_va), "AS UNMAP_BUFFER")
    if mem.cpu_addr is not None: self.io.munmap(mem.cpu_addr, mem.size)
    if mem.dmabuf_fd >= 0: self.io.close(mem.dmabuf_fd)
    self._ioctl(self.nvmap_fd, U.NVMAP_IOC_FREE, mem.handle, "NVMAP_IOC_FREE")
    mem.gpu_va, mem.dmabuf_fd = None, -1
    if not keep_cpu_addr: mem.cpu_addr = None

  def free(self, buf:HCQBuffer):
    if buf.owner is not self.dev or self.closed or self.buffers.pop(buf.meta.handle, None) is None: return
    self._release(buf.meta)

  def map(self, buf:HCQBuffer):
    if buf.owner is self.dev: return None
    raise TegraError("mapping another device's memory into the Orin GPU is not supported; copy through the NV allocator")

  # ---------------- teardown ----------------
  def device_fini(self):
    """Release everything this process holds, channels before the TSG before the address space."""
    if self.closed: return
    self.closed = True
    for fd in self.channel_fds: self.io.close(fd)
    for kind, obj in list(self.objects.values()):
      if kind == "tsg": self.io.close(obj)
    for buf in list(self.buffers.values())[::-1]:
      saved = bytes(buf.cpu_view()[:]) if buf.meta.is_signal_page else None
      self._release(buf.meta, keep_cpu_addr=saved is not None)
      if saved is not None: _tombstone(buf.view.addr, saved)
    self.buffers.clear()
    if self.usermode_addr is not None: self.io.munmap(self.usermode_addr, U.USERMODE_PAGE_SIZE)
    for fd in (self.as_fd, self.nvmap_fd, self.ctrl_fd):
      if fd >= 0: self.io.close(fd)

  def read_error_notifier(self) -> list[str]:
    out = []
    for ch in self.channels:
      if not ch.notifier_ok: continue
      v = ch.notifier.cpu_view()
      info32, status = v.view(U.NOTIFIER_INFO32_OFFSET, 4, 'I')[0], v.view(U.NOTIFIER_STATUS_OFFSET, 2, 'H')[0]
      if status: out.append(f"channel (token {ch.token:#x}): error notifier info32={info32} status={status:#x}")
    return out

def hang_message(report:list[str]) -> str:
  return ("Tegra GPU hang: " + "; ".join(report) + ". There is no RM debugger on Tegra: see `sudo dmesg | grep -iE 'nvgpu|gk20a|mmu'`")

def _tombstone(addr:int, content:bytes):
  """After close, tinygrad objects that outlive the device (a TinyJit graph's destructor, the atexit hook) still read
  their signals. Put a private anonymous copy of the final signal values where the signal page was mapped, so those
  reads see completed work instead of faulting. The address was ours a moment ago, so MAP_FIXED cannot clobber anything
  we did not reserve; the copy is plain process memory, not a driver resource."""
  import mmap as _mmap
  libc = ctypes.CDLL(None, use_errno=True)
  libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
  libc.mmap.restype = ctypes.c_void_p
  got = libc.mmap(addr, len(content), _mmap.PROT_READ | _mmap.PROT_WRITE, _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS | 0x10, -1, 0)  # MAP_FIXED
  if got == addr: ctypes.memmove(addr, content, len(content))

# ---------------- queues ----------------
class TegraSubmitMixin:
  def _submit_to_gpfifo(self, dev, gpfifo:GPFifo):
    """Like tinygrad's, but waits for ring space (a 1024-entry ring can fill up; the desktop's 65536 rarely does) and
    rings the doorbell through the I/O object, after a real store barrier."""
    if dev == self.binded_device: cmdq_addr = self.hw_page.va_addr
    else:
      cmdq_addr = dev.cmdq_allocator.alloc(len(self._q) * 4, 16)
      cmdq_wptr = (cmdq_addr - dev.cmdq_page.va_addr) // 4
      dev.cmdq[cmdq_wptr : cmdq_wptr + len(self._q)] = ops_nv.array.array('I', self._q)
    deadline = time.perf_counter() + 10
    while (gpfifo.put_value + 1 - gpfifo.gpget[0]) % gpfifo.entries_count == 0 and gpfifo.put_value >= gpfifo.entries_count - 1:
      # GP_GET in USERD is written back by the GPU only now and then. When the timeline has reached the value of this
      # channel's last submission, everything before it was consumed: the ring is empty, whatever GP_GET says.
      if dev.timeline_signal.value >= gpfifo.last_timeline: break
      if (report:=dev.iface.read_error_notifier()): raise TegraError(hang_message(report))
      if time.perf_counter() > deadline: raise TegraError("GPFIFO ring full for 10 s: the GPU is not consuming work (hang?)")
    gpfifo.ring[gpfifo.put_value % gpfifo.entries_count] = (cmdq_addr//4 << 2) | (len(self._q) << 42) | (1 << 41)
    dev.iface.store_barrier()   # the entry must be in memory before the GP_PUT that publishes it (write-combined stores reorder)
    gpfifo.gpput[0] = (gpfifo.put_value + 1) % gpfifo.entries_count
    dev.iface.ring_doorbell(gpfifo.token)
    gpfifo.put_value += 1
    gpfifo.last_timeline = dev.timeline_value - 1   # the newest timeline value any queue submitted so far can release

class TegraComputeQueue(TegraSubmitMixin, NVComputeQueue):
  def signal(self, signal, value=0):
    """Always a pushbuffer semaphore release: reusing a QMD's embedded release lost signals on hardware (pitfall 3)."""
    self.active_qmd = None
    return super().signal(signal, value)

class TegraCopyQueue(TegraSubmitMixin, NVCopyQueue): pass

# ---------------- the device ----------------
_StockNVDevice = ops_nv.NVDevice

@dataclass
class TegraGPFifo(GPFifo):
  gpget: MMIOInterface|None = None
  last_timeline: int = 0

class NVDevice(_StockNVDevice):
  """tinygrad's NVDevice with the Tegra differences. Other interfaces (NVK, PCI) take the stock path untouched."""
  ifaces = [TEGRAIface, *_StockNVDevice.ifaces]

  def _select_iface(self, device:str):
    return self.__dict__.pop("_preselected_iface", None) or super()._select_iface(device)

  def __init__(self, device:str=""):
    iface = self._select_iface(device)
    if not isinstance(iface, TEGRAIface):
      self._preselected_iface = iface
      return super().__init__(device)
    self.iface = iface
    try: self._tegra_init(device)
    except BaseException:
      iface.device_fini()
      raise

  def _tegra_init(self, device:str):
    self.nvdevice = self.iface.rm_alloc(self.iface.root, nv_gpu.NV01_DEVICE_0)
    self.subdevice = self.iface.rm_alloc(self.nvdevice, nv_gpu.NV20_SUBDEVICE_0)
    self.virtmem = self.iface.rm_alloc(self.nvdevice, nv_gpu.NV01_MEMORY_VIRTUAL)
    self.usermode, self.gpu_mmio = self.iface.setup_usermode()
    self.iface.rm_control(self.subdevice, nv_gpu.NV2080_CTRL_CMD_PERF_BOOST)
    self.vaspace = self.iface.rm_alloc(self.nvdevice, nv_gpu.FERMI_VASPACE_A)
    self.channel_group = self.iface.rm_alloc(self.nvdevice, nv_gpu.KEPLER_CHANNEL_GROUP_A)
    ctxshare = self.iface.rm_alloc(self.channel_group, nv_gpu.FERMI_CONTEXT_SHARE_A)
    self.compute_gpfifo = self._new_gpu_fifo(None, ctxshare, self.channel_group, entries=GPFIFO_ENTRIES, compute=True)
    self.dma_gpfifo = self._new_gpu_fifo(None, ctxshare, self.channel_group, entries=GPFIFO_ENTRIES, compute=False)

    self.cmdq_page:HCQBuffer = self.iface.alloc(0x200000, cpu_access=True, uncached=True)
    self.cmdq_allocator = ops_nv.BumpAllocator(size=self.cmdq_page.size, base=int(self.cmdq_page.va_addr), wrap=True)
    self.cmdq = self.cmdq_page.cpu_view().view(fmt='I')

    self.num_gpcs, self.num_tpc_per_gpc, self.num_sm_per_tpc, self.max_warps_per_sm, self.sm_version = self._query_gpu_info('num_gpcs',
      'num_tpc_per_gpc', 'num_sm_per_tpc', 'max_warps_per_sm', 'sm_version')
    self.arch = f"sm_{(self.sm_version >> 8) & 0xff}{self.sm_version & 0xf}"
    self.sass_version = ((self.sm_version & 0xf00) >> 4) | (self.sm_version & 0xf)
    renderers = self.iface.io.renderers() if hasattr(self.iface.io, "renderers") else [CUDARenderer, PTXRenderer, NVCCRenderer, NAKRenderer]
    HCQCompiled.__init__(self, device, NVAllocator(self), renderers, NVProgram, NVSignal,
                         TegraComputeQueue, TegraCopyQueue, arch=self.arch)
    self.pma_enabled = False
    self._setup_gpfifos()

  def is_nvd(self) -> bool: return False if isinstance(self.iface, TEGRAIface) else super().is_nvd()

  def _new_gpu_fifo(self, gpfifo_area, ctxshare, channel_group, offset=0, entries=0x400, compute=False, video=False):
    if not isinstance(self.iface, TEGRAIface): return super()._new_gpu_fifo(gpfifo_area, ctxshare, channel_group, offset, entries, compute, video)
    if video: raise TegraError("video decode (NVDEC) is not supported on the Tegra backend")
    handle = self.iface.rm_alloc(channel_group, self.iface.gpfifo_class, ChannelParams(ctxshare, entries))
    self.iface.rm_alloc(handle, self.iface.compute_class if compute else self.iface.dma_class)
    ch:TegraChannel = self.iface.objects[handle][1]
    userd = ch.userd.cpu_view()
    return TegraGPFifo(ring=ch.ring.cpu_view().view(0, entries * 8, fmt='Q'), gpput=userd.view(U.USERD_GP_PUT_OFFSET, 4, fmt='I'),
                       entries_count=entries, token=ch.token, gpget=userd.view(U.USERD_GP_GET_OFFSET, 4, fmt='I'))

  def _setup_gpfifos(self):
    if not isinstance(self.iface, TEGRAIface): return super()._setup_gpfifos()
    self.slm_per_thread, self.shader_local_mem = 0, None
    self.shared_mem_window, self.local_mem_window = SHARED_MEM_WINDOW, LOCAL_MEM_WINDOW   # reserved with ALLOC_SPACE in TEGRAIface
    TegraComputeQueue().setup(compute_class=self.iface.compute_class, local_mem_window=self.local_mem_window,
                              shared_mem_window=self.shared_mem_window).signal(self.timeline_signal, self.next_timeline()).submit(self)
    TegraCopyQueue().wait(self.timeline_signal, self.timeline_value - 1).setup(copy_class=self.iface.dma_class) \
                    .signal(self.timeline_signal, self.next_timeline()).submit(self)
    self.synchronize()

  def _ensure_has_local_memory(self, required):
    """tinygrad 0.14.0's, with two Tegra differences: drain the GPU before the old scratch buffer is freed (0.14.0 frees it
    under running kernels, pitfall 4), and submit through TegraComputeQueue (the stock queue rings the doorbell without a
    store barrier and without waiting for ring space)."""
    if not isinstance(self.iface, TEGRAIface): return super()._ensure_has_local_memory(required)
    if self.slm_per_thread >= required: return
    self.synchronize()
    self.slm_per_thread, old_slm_per_thread = round_up(required, 32), self.slm_per_thread
    bytes_per_tpc = round_up(round_up(self.slm_per_thread * 32, 0x200) * self.max_warps_per_sm * self.num_sm_per_tpc, 0x8000)
    self.shader_local_mem, ok = self._realloc(self.shader_local_mem, round_up(bytes_per_tpc * self.num_tpc_per_gpc * self.num_gpcs, 0x20000))
    if not ok: self.slm_per_thread = old_slm_per_thread
    TegraComputeQueue().wait(self.timeline_signal, self.timeline_value - 1).setup(local_mem=self.shader_local_mem.va_addr,
      local_mem_tpc_bytes=bytes_per_tpc).signal(self.timeline_signal, self.next_timeline()).submit(self)

  def invalidate_caches(self):
    if not isinstance(self.iface, TEGRAIface): return super().invalidate_caches()   # IO-coherent: nothing to flush

  def on_device_hang(self):
    if not isinstance(self.iface, TEGRAIface): return super().on_device_hang()
    report = self.iface.read_error_notifier() or ["no channel error recorded (the GPU may be stalled on a semaphore)"]
    raise RuntimeError(hang_message(report))

  def synchronize(self, timeout:int|None=None):
    # after finalize() the signal memory is unmapped; tinygrad's atexit hook and late buffer frees still call this
    if isinstance(getattr(self, "iface", None), TEGRAIface) and self.iface.closed: return
    return super().synchronize(timeout)

  def finalize(self):
    """Close the device: wait for the GPU, then release every buffer, channel, the TSG, address space and fds."""
    if isinstance(self.iface, TEGRAIface) and self.iface.closed: return
    super().finalize()
    if isinstance(self.iface, TEGRAIface): self.iface.device_fini()
