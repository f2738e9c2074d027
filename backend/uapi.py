"""The subset of the L4T nvgpu / nvmap kernel UAPI that the backend uses, as ctypes structs and ioctl numbers.

Field names follow the public headers (include/uapi/linux/nvgpu.h, nvgpu-ctrl.h, nvgpu-as.h, nvmap.h in L4T r36).
Nothing here imports tinygrad. `tests/test_backend_uapi.py` checks every number and size against the facts sheet, so a
typo in a field list fails a test instead of corrupting kernel memory on a Jetson.
"""
import ctypes

# ---- ioctl number encoding (asm-generic/ioctl.h): dir:2 | size:14 | type:8 | nr:8 ----
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
def _IOC(direction:int, typ:str, nr:int, size:int) -> int: return (direction << 30) | (size << 16) | (ord(typ) << 8) | nr
def _IO(typ:str, nr:int) -> int: return _IOC(_IOC_NONE, typ, nr, 0)
def _IOW(typ:str, nr:int, struct_t) -> int: return _IOC(_IOC_WRITE, typ, nr, ctypes.sizeof(struct_t))
def _IOWR(typ:str, nr:int, struct_t) -> int: return _IOC(_IOC_READ | _IOC_WRITE, typ, nr, ctypes.sizeof(struct_t))

u8, u16, u32, u64, s16, s32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int16, ctypes.c_int32

# ---- /dev/nvgpu/igpu0/ctrl ('G') ----
class nvgpu_gpu_get_characteristics(ctypes.Structure):
  _fields_ = [("gpu_characteristics_buf_size", u64), ("gpu_characteristics_buf_addr", u64)]

def _sparse_struct(name:str, size:int, fields:list[tuple[str, int, type]]):
  """A struct with fields at fixed byte offsets and opaque padding between them: for the 328-byte characteristics
  block we only need a dozen of its ~80 fields, and offsets checked against the header are safer than retyping all."""
  out, pos = [], 0
  for i, (fname, off, ctype) in enumerate(sorted(fields, key=lambda f: f[1])):
    if off > pos: out.append((f"_pad{i}", u8 * (off - pos)))
    out.append((fname, ctype))
    pos = off + ctypes.sizeof(ctype)
  if size > pos: out.append(("_pad_end", u8 * (size - pos)))
  return type(name, (ctypes.Structure,), {"_pack_": 1, "_fields_": out})

nvgpu_gpu_characteristics = _sparse_struct("nvgpu_gpu_characteristics", 328, [
  ("arch", 0, u32), ("impl", 4, u32), ("rev", 8, u32), ("num_gpc", 12, u32), ("num_tpc_per_gpc", 40, u32), ("flags", 64, u64),
  ("compute_class", 80, u32), ("gpfifo_class", 84, u32), ("inline_to_memory_class", 88, u32), ("dma_copy_class", 92, u32),
  ("sm_arch_sm_version", 100, u32), ("sm_arch_warp_count", 108, u32), ("gpu_va_bit_count", 122, u8), ("max_gpfifo_entries", 308, u32)])
NVGPU_GPU_FLAGS_SUPPORT_IO_COHERENCE, NVGPU_GPU_FLAGS_SUPPORT_TSG_SUBCONTEXTS, NVGPU_GPU_FLAGS_SUPPORT_USERMODE_SUBMIT = 1 << 20, 1 << 22, 1 << 30

class nvgpu_alloc_as_args(ctypes.Structure):
  _fields_ = [("big_page_size", u32), ("as_fd", s32), ("flags", u32), ("reserved", u32), ("va_range_start", u64), ("va_range_end", u64),
              ("va_range_split", u64), ("padding", u32 * 6)]
NVGPU_GPU_IOCTL_ALLOC_AS_FLAGS_UNIFIED_VA = 1 << 1

class nvgpu_gpu_open_tsg_args(ctypes.Structure):
  _fields_ = [("tsg_fd", u32), ("flags", u32), ("source_device_instance_id", u64), ("share_token", u64)]

class nvgpu_channel_open_args(ctypes.Structure):  # union { struct { s32 runlist_id; } in; struct { s32 channel_fd; } out; }
  _fields_ = [("runlist_id", s32)]
  @property
  def channel_fd(self) -> int: return self.runlist_id

NVGPU_GPU_IOCTL_GET_CHARACTERISTICS = _IOWR('G', 5, nvgpu_gpu_get_characteristics)
NVGPU_GPU_IOCTL_ALLOC_AS = _IOWR('G', 8, nvgpu_alloc_as_args)
NVGPU_GPU_IOCTL_OPEN_TSG = _IOWR('G', 9, nvgpu_gpu_open_tsg_args)
NVGPU_GPU_IOCTL_OPEN_CHANNEL = _IOWR('G', 11, nvgpu_channel_open_args)

# ---- address space fd ('A') ----
class nvgpu_as_bind_channel_args(ctypes.Structure): _fields_ = [("channel_fd", u32)]
class nvgpu_as_alloc_space_args(ctypes.Structure):
  _fields_ = [("pages", u64), ("page_size", u32), ("flags", u32), ("offset", u64), ("padding", u32 * 2)]  # offset: union with align
class nvgpu_as_unmap_buffer_args(ctypes.Structure): _fields_ = [("offset", u64)]
class nvgpu_as_map_buffer_ex_args(ctypes.Structure):
  _fields_ = [("flags", u32), ("compr_kind", s16), ("incompr_kind", s16), ("dmabuf_fd", u32), ("page_size", u32),
              ("buffer_offset", u64), ("mapping_size", u64), ("offset", u64)]
NVGPU_AS_ALLOC_SPACE_FLAGS_FIXED_OFFSET = 1 << 0
NVGPU_AS_MAP_BUFFER_FLAGS_CACHEABLE = 1 << 2
NV_KIND_INVALID = -1

NVGPU_AS_IOCTL_BIND_CHANNEL = _IOWR('A', 1, nvgpu_as_bind_channel_args)
NVGPU_AS_IOCTL_UNMAP_BUFFER = _IOWR('A', 5, nvgpu_as_unmap_buffer_args)
NVGPU_AS_IOCTL_ALLOC_SPACE = _IOWR('A', 6, nvgpu_as_alloc_space_args)
NVGPU_AS_IOCTL_MAP_BUFFER_EX = _IOWR('A', 7, nvgpu_as_map_buffer_ex_args)

# ---- TSG fd ('T') ----
class nvgpu_tsg_bind_channel_ex_args(ctypes.Structure): _fields_ = [("channel_fd", u32), ("subcontext_id", u32), ("reserved", u8 * 16)]
class nvgpu_tsg_create_subcontext_args(ctypes.Structure): _fields_ = [("type", u32), ("as_fd", u32), ("veid", u32), ("reserved", u32)]
NVGPU_TSG_SUBCONTEXT_TYPE_ASYNC = 1
NVGPU_TSG_IOCTL_BIND_CHANNEL_EX = _IOWR('T', 11, nvgpu_tsg_bind_channel_ex_args)
NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT = _IOWR('T', 18, nvgpu_tsg_create_subcontext_args)

# ---- channel fd ('H') ----
class nvgpu_channel_wdt_args(ctypes.Structure): _fields_ = [("wdt_status", u32), ("timeout_ms", u32)]
class nvgpu_alloc_obj_ctx_args(ctypes.Structure): _fields_ = [("class_num", u32), ("flags", u32), ("obj_id", u64)]
class nvgpu_set_error_notifier(ctypes.Structure): _fields_ = [("offset", u64), ("size", u64), ("mem", u32), ("padding", u32)]
class nvgpu_channel_setup_bind_args(ctypes.Structure):
  _fields_ = [("num_gpfifo_entries", u32), ("num_inflight_jobs", u32), ("flags", u32), ("userd_dmabuf_fd", s32), ("gpfifo_dmabuf_fd", s32),
              ("work_submit_token", u32), ("userd_dmabuf_offset", u64), ("gpfifo_dmabuf_offset", u64), ("gpfifo_gpu_va", u64),
              ("userd_gpu_va", u64), ("usermode_mmio_gpu_va", u64), ("reserved", u32 * 9)]
NVGPU_IOCTL_CHANNEL_DISABLE_WDT = 1
NVGPU_CHANNEL_SETUP_BIND_FLAGS_DETERMINISTIC, NVGPU_CHANNEL_SETUP_BIND_FLAGS_USERMODE_SUPPORT = 1 << 1, 1 << 3

NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX = _IOWR('H', 108, nvgpu_alloc_obj_ctx_args)
NVGPU_IOCTL_CHANNEL_SET_ERROR_NOTIFIER = _IOWR('H', 111, nvgpu_set_error_notifier)
NVGPU_IOCTL_CHANNEL_WDT = _IOW('H', 119, nvgpu_channel_wdt_args)
NVGPU_IOCTL_CHANNEL_SETUP_BIND = _IOWR('H', 128, nvgpu_channel_setup_bind_args)

# struct nvgpu_notification (what SET_ERROR_NOTIFIER fills on a channel error): u32 time_stamp[2], u32 info32 (the error
# code), u16 info16, u16 status (nonzero once an error was recorded).
NOTIFIER_INFO32_OFFSET, NOTIFIER_STATUS_OFFSET = 8, 14

# ---- /dev/nvmap ('N') ----
class nvmap_create_handle(ctypes.Structure): _fields_ = [("size", u32), ("handle", u32)]  # size: union with s32 fd (GET_FD returns the fd here)
class nvmap_alloc_handle(ctypes.Structure): _fields_ = [("handle", u32), ("heap_mask", u32), ("flags", u32), ("align", u32), ("numa_nid", s32)]
NVMAP_HEAP_IOVMM, NVMAP_HEAP_CARVEOUT_GENERIC_SYSMEM = 1 << 30, 1 << 31
NVMAP_HANDLE_UNCACHEABLE, NVMAP_HANDLE_WRITE_COMBINE, NVMAP_HANDLE_INNER_CACHEABLE, NVMAP_HANDLE_CACHEABLE = 0, 1, 2, 3
NVMAP_HANDLE_ZEROED_PAGES = 1 << 5
NVMAP_TAG = 0x0900   # a nonzero tag in flags[31:16] keeps nvmap from warning about untagged allocations in dmesg

NVMAP_IOC_CREATE = _IOWR('N', 0, nvmap_create_handle)
NVMAP_IOC_ALLOC = _IOW('N', 3, nvmap_alloc_handle)
NVMAP_IOC_FREE = _IO('N', 4)
NVMAP_IOC_GET_FD = _IOWR('N', 15, nvmap_create_handle)

# ---- usermode submit ----
USERMODE_PAGE_SIZE = 0x10000   # mmap(ctrl_fd, 64 KiB, offset 0): the doorbell page
USERMODE_DOORBELL_OFFSET = 0x90  # write the channel's work_submit_token here
USERD_GP_GET_OFFSET, USERD_GP_PUT_OFFSET = 0x88, 0x8C
USERD_SIZE = 0x1000

# Every ioctl the backend issues, by name: the tests compare this table with the facts sheet.
IOCTLS = {name: val for name, val in globals().items() if name.startswith(("NVGPU_GPU_IOCTL_", "NVGPU_AS_IOCTL_", "NVGPU_TSG_IOCTL_",
                                                                           "NVGPU_IOCTL_CHANNEL_", "NVMAP_IOC_")) and val > 0xfff}
