"""What the fake Orin knows about nvgpu, nvmap and the ga10b GPU, transcribed from public sources -- never from backend/uapi.py.

Each entry names where it comes from. Paths are in these public repositories (the L4T r36 kernel sources):
  NVGPU  = nvidia-mirror/linux-nvgpu          (nvgpu driver and its UAPI headers, include/uapi/linux/)
  NVMAP  = sradcliffe-nottinghamspirk/linux-nv-oot @ 30ebc1a6396f73402587d2d43567e1e8264dbcaf (include/uapi/linux/nvmap.h,
           the r36 out-of-tree header). OE4T/linux-tegra-5.10's header (r35, @0516cd94) lacks nvmap_alloc_handle.numa_nid,
           so its NVMAP_IOC_ALLOC is 16 bytes, not the 20 used here: r36 is the source of this layout.
  AS     = nvidia-mirror/linux-nvgpu @ 21cb70f58d56749ccdd6b6dd830951790a1d39b4 (include/uapi/linux/nvgpu-as.h)
  FACTS  = shared/docs/tegra-nvgpu-facts.md   (sizes and offsets obtained by compiling the UAPI headers)
A citation names the file and the definition; `file:N` is its line at the commit above (counted from the stored text,
nvmap.h and nvgpu-as.h so far). Citations without a line (nvgpu.h, nvgpu-ctrl.h, vm.c, the hw and class headers) still
use the definition as the anchor (`grep -n NAME FILE`). Rules that the kernel does
not enforce but the fake does are listed in STRICTER_THAN_KERNEL with the reason.
"""
import ctypes

u8, u16, u32, u64, s16, s32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int16, ctypes.c_int32

# ---- ioctl encoding: include/uapi/asm-generic/ioctl.h (_IOC: dir<<30 | size<<16 | type<<8 | nr) ----
IOC_WRITE, IOC_READ = 1, 2
def ioc(direction:int, magic:str, nr:int, size:int) -> int: return (direction << 30) | (size << 16) | (ord(magic) << 8) | nr

# ---- argument layouts, one class per UAPI struct, fields in header order ----
class alloc_as(ctypes.Structure):          # NVGPU include/uapi/linux/nvgpu-ctrl.h: struct nvgpu_alloc_as_args
  _fields_ = [("big_page_size", u32), ("as_fd", s32), ("flags", u32), ("reserved", u32), ("va_range_start", u64), ("va_range_end", u64),
              ("va_range_split", u64), ("padding", u32 * 6)]
class get_characteristics(ctypes.Structure):  # nvgpu-ctrl.h: struct nvgpu_gpu_get_characteristics
  _fields_ = [("buf_size", u64), ("buf_addr", u64)]
class open_tsg(ctypes.Structure):          # nvgpu-ctrl.h: struct nvgpu_gpu_open_tsg_args
  _fields_ = [("tsg_fd", u32), ("flags", u32), ("source_device_instance_id", u64), ("share_token", u64)]
class open_channel(ctypes.Structure):      # nvgpu-ctrl.h: struct nvgpu_channel_open_args (union in.runlist_id / out.channel_fd)
  _fields_ = [("value", s32)]
class as_bind_channel(ctypes.Structure):   # nvgpu-as.h:90 struct nvgpu_as_bind_channel_args
  _fields_ = [("channel_fd", u32)]
class as_alloc_space(ctypes.Structure):    # nvgpu-as.h:58 struct nvgpu_as_alloc_space_args (union o_a)
  _fields_ = [("pages", u64), ("page_size", u32), ("flags", u32), ("offset", u64), ("padding", u32 * 2)]
class as_map_buffer_ex(ctypes.Structure):  # nvgpu-as.h:216 struct nvgpu_as_map_buffer_ex_args
  _fields_ = [("flags", u32), ("compr_kind", s16), ("incompr_kind", s16), ("dmabuf_fd", u32), ("page_size", u32), ("buffer_offset", u64),
              ("mapping_size", u64), ("offset", u64)]
class as_unmap_buffer(ctypes.Structure):   # nvgpu-as.h: struct nvgpu_as_unmap_buffer_args
  _fields_ = [("offset", u64)]
class tsg_bind_channel_ex(ctypes.Structure):  # nvgpu.h: struct nvgpu_tsg_bind_channel_ex_args
  _fields_ = [("channel_fd", u32), ("subcontext_id", u32), ("reserved", u8 * 16)]
class tsg_create_subcontext(ctypes.Structure):  # nvgpu.h: struct nvgpu_tsg_create_subcontext_args
  _fields_ = [("type", u32), ("as_fd", u32), ("veid", u32), ("reserved", u32)]
class channel_wdt(ctypes.Structure):       # nvgpu.h: struct nvgpu_channel_wdt_args
  _fields_ = [("wdt_status", u32), ("timeout_ms", u32)]
class alloc_obj_ctx(ctypes.Structure):     # nvgpu.h: struct nvgpu_alloc_obj_ctx_args
  _fields_ = [("class_num", u32), ("flags", u32), ("obj_id", u64)]
class set_error_notifier(ctypes.Structure):  # nvgpu.h: struct nvgpu_set_error_notifier
  _fields_ = [("offset", u64), ("size", u64), ("mem", u32), ("padding", u32)]
class setup_bind(ctypes.Structure):        # nvgpu.h: struct nvgpu_channel_setup_bind_args
  _fields_ = [("num_gpfifo_entries", u32), ("num_inflight_jobs", u32), ("flags", u32), ("userd_dmabuf_fd", s32), ("gpfifo_dmabuf_fd", s32),
              ("work_submit_token", u32), ("userd_dmabuf_offset", u64), ("gpfifo_dmabuf_offset", u64), ("gpfifo_gpu_va", u64),
              ("userd_gpu_va", u64), ("usermode_mmio_gpu_va", u64), ("reserved", u32 * 9)]
class nvmap_create(ctypes.Structure):      # NVMAP nvmap.h:45 struct nvmap_create_handle (union size / fd)
  _fields_ = [("size_or_fd", u32), ("handle", u32)]
class nvmap_alloc(ctypes.Structure):       # nvmap.h:91 struct nvmap_alloc_handle (numa_nid at :96)
  _fields_ = [("handle", u32), ("heap_mask", u32), ("flags", u32), ("align", u32), ("numa_nid", s32)]

# name -> (fd kind, direction, magic, nr, layout or None for an integer argument, source)
IOCTLS = {
  "GET_CHARACTERISTICS": ("ctrl", 3, "G", 5, get_characteristics, "nvgpu-ctrl.h: NVGPU_GPU_IOCTL_GET_CHARACTERISTICS"),
  "ALLOC_AS": ("ctrl", 3, "G", 8, alloc_as, "nvgpu-ctrl.h: NVGPU_GPU_IOCTL_ALLOC_AS"),
  "OPEN_TSG": ("ctrl", 3, "G", 9, open_tsg, "nvgpu-ctrl.h: NVGPU_GPU_IOCTL_OPEN_TSG"),
  "OPEN_CHANNEL": ("ctrl", 3, "G", 11, open_channel, "nvgpu-ctrl.h: NVGPU_GPU_IOCTL_OPEN_CHANNEL"),
  "AS_BIND_CHANNEL": ("as", 3, "A", 1, as_bind_channel, "nvgpu-as.h: NVGPU_AS_IOCTL_BIND_CHANNEL"),
  "AS_UNMAP_BUFFER": ("as", 3, "A", 5, as_unmap_buffer, "nvgpu-as.h: NVGPU_AS_IOCTL_UNMAP_BUFFER"),
  "AS_ALLOC_SPACE": ("as", 3, "A", 6, as_alloc_space, "nvgpu-as.h: NVGPU_AS_IOCTL_ALLOC_SPACE"),
  "AS_MAP_BUFFER_EX": ("as", 3, "A", 7, as_map_buffer_ex, "nvgpu-as.h: NVGPU_AS_IOCTL_MAP_BUFFER_EX"),
  "TSG_BIND_CHANNEL_EX": ("tsg", 3, "T", 11, tsg_bind_channel_ex, "nvgpu.h: NVGPU_TSG_IOCTL_BIND_CHANNEL_EX"),
  "TSG_CREATE_SUBCONTEXT": ("tsg", 3, "T", 18, tsg_create_subcontext, "nvgpu.h: NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT"),
  "CHANNEL_ALLOC_OBJ_CTX": ("channel", 3, "H", 108, alloc_obj_ctx, "nvgpu.h: NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX"),
  "CHANNEL_SET_ERROR_NOTIFIER": ("channel", 3, "H", 111, set_error_notifier, "nvgpu.h: NVGPU_IOCTL_CHANNEL_SET_ERROR_NOTIFIER"),
  "CHANNEL_WDT": ("channel", IOC_WRITE, "H", 119, channel_wdt, "nvgpu.h: NVGPU_IOCTL_CHANNEL_WDT (_IOW)"),
  "CHANNEL_SETUP_BIND": ("channel", 3, "H", 128, setup_bind, "nvgpu.h: NVGPU_IOCTL_CHANNEL_SETUP_BIND"),
  "NVMAP_CREATE": ("nvmap", 3, "N", 0, nvmap_create, "nvmap.h:270 NVMAP_IOC_CREATE"),
  "NVMAP_ALLOC": ("nvmap", IOC_WRITE, "N", 3, nvmap_alloc, "nvmap.h:276 NVMAP_IOC_ALLOC (_IOW)"),
  "NVMAP_FREE": ("nvmap", 0, "N", 4, None, "nvmap.h:280 NVMAP_IOC_FREE (_IO, the handle is the argument)"),
  "NVMAP_GET_FD": ("nvmap", 3, "N", 15, nvmap_create, "nvmap.h:314 NVMAP_IOC_GET_FD"),
}
NUMBERS = {ioc(d, m, nr, ctypes.sizeof(t) if t is not None else 0): name for name, (_, d, m, nr, t, _src) in IOCTLS.items()}

# ---- struct nvgpu_gpu_characteristics (nvgpu-ctrl.h); offsets from FACTS (compiled header), 328 bytes ----
CHARACTERISTICS_SIZE = 328
CHARACTERISTICS_OFFSETS = {"arch": (0, u32), "impl": (4, u32), "num_gpc": (12, u32), "num_tpc_per_gpc": (40, u32), "flags": (64, u64),
  "compute_class": (80, u32), "gpfifo_class": (84, u32), "dma_copy_class": (92, u32), "sm_arch_sm_version": (100, u32),
  "sm_arch_warp_count": (108, u32), "gpu_va_bit_count": (122, u8), "max_gpfifo_entries": (308, u32)}
# nvgpu-ctrl.h NVGPU_GPU_FLAGS_SUPPORT_IO_COHERENCE / _TSG_SUBCONTEXTS / _USERMODE_SUBMIT (bit numbers also in FACTS)
GPU_FLAGS_SUPPORT_IO_COHERENCE, GPU_FLAGS_SUPPORT_TSG_SUBCONTEXTS, GPU_FLAGS_SUPPORT_USERMODE_SUBMIT = 1 << 20, 1 << 22, 1 << 30

# ---- ga10b values (FACTS "Hardware"; classes also in NVGPU include/nvgpu/hw/ga10b and open-gpu-doc class headers) ----
COMPUTE_CLASS, GPFIFO_CLASS, DMA_CLASS = 0xC7C0, 0xC76F, 0xC7B5    # AMPERE_COMPUTE_B, AMPERE_CHANNEL_GPFIFO_A, AMPERE_DMA_COPY_B
SM_VERSION, VA_BITS = 0x807, 40

# ---- flags and rules, each with its source ----
ALLOC_AS_FLAGS_UNIFIED_VA = 1 << 1           # nvgpu-ctrl.h NVGPU_GPU_IOCTL_ALLOC_AS_FLAGS_UNIFIED_VA
AS_PDE_ALIGN = 2 << 20                        # nvgpu-ctrl.h struct nvgpu_alloc_as_args: va_range_start/end "aligned by PDE" (2 MiB, FACTS)
ALLOC_SPACE_FLAGS_FIXED_OFFSET = 1 << 0       # nvgpu-as.h:50 NVGPU_AS_ALLOC_SPACE_FLAGS_FIXED_OFFSET
MAP_FLAGS_FIXED_OFFSET, MAP_FLAGS_CACHEABLE = 1 << 0, 1 << 2   # nvgpu-as.h:105 / :106 NVGPU_AS_MAP_BUFFER_FLAGS_FIXED_OFFSET / _CACHEABLE
MAP_FLAGS_KNOWN = (1 << 0) | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 9) | (3 << 10) | (1 << 12)   # nvgpu-as.h NVGPU_AS_MAP_BUFFER_FLAGS_*
NV_KIND_INVALID = -1                          # nvgpu-as.h:235 NV_KIND_INVALID; :232 "If neither ... is set, the map call will fail"
# NVGPU drivers/gpu/nvgpu/os/linux/vm.c nvgpu_vm_map_buffer(): "For regular maps we do not accept either an input address or a
# buffer_offset" (EINVAL) and "map_size && non-fixed-mapping!" (EINVAL). nvgpu-as.h:186 page_size "If left unset this IOCTL will return -EINVAL";
# :196 "regular (non-fixed) mappings require this field [buffer_offset] to be set to 0".
SUBCONTEXT_TYPE_ASYNC = 1                     # nvgpu.h NVGPU_TSG_SUBCONTEXT_TYPE_ASYNC
WDT_DISABLE = 1                               # nvgpu.h NVGPU_IOCTL_CHANNEL_DISABLE_WDT
SETUP_BIND_FLAGS_DETERMINISTIC, SETUP_BIND_FLAGS_USERMODE_SUPPORT = 1 << 1, 1 << 3   # nvgpu.h NVGPU_CHANNEL_SETUP_BIND_FLAGS_*
SETUP_BIND_FLAGS_KNOWN = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4)        # nvgpu.h NVGPU_CHANNEL_SETUP_BIND_FLAGS_* (VPR .. REPLAYABLE)
NVMAP_HEAP_IOVMM, NVMAP_HEAP_CARVEOUT_GENERIC = 1 << 30, 1 << 0   # NVMAP_HEAP_IOVMM / _CARVEOUT_GENERIC: not in either uapi nvmap.h
                                                                   # read (kernel-side header); value from FACTS, source line unverified
NVMAP_HEAP_SYSMEM = 1 << 31                   # nvmap.h NVMAP_HEAP_SYSMEM; on Orin it answers ENOMEM (FACTS "Memory")
NVMAP_CACHE_MASK = 0x1f                       # nvmap.h NVMAP_HANDLE_UNCACHEABLE .. NVMAP_HANDLE_CACHEABLE are 0..3 in flags[4:0]
PAGE = 0x1000

# ---- usermode submit, from the ga10b hardware headers (NVGPU include/nvgpu/hw/ga10b/) ----
USERD_GP_GET_OFFSET = 34 * 4                  # hw_ram_ga10b.h ram_userd_gp_get_w() = 34 (words)
USERD_GP_PUT_OFFSET = 35 * 4                  # hw_ram_ga10b.h ram_userd_gp_put_w() = 35
USERMODE_BASE, USERMODE_SIZE = 0x810000, 0x10000   # hw_usermode_ga10b.h usermode_cfg0_r() = 0x810000; 64 KiB window (FACTS)
DOORBELL_OFFSET = 0x810090 - USERMODE_BASE    # hw_usermode_ga10b.h usermode_notify_channel_pending_r() = 0x00810090
USERD_SIZE = 0x1000                           # FACTS "ioctls used", step 10 (4 KiB USERD)
# GPFIFO entry: open-gpu-doc classes/host/clc56f.h NVC56F_GP_ENTRY0_GET (address[31:2]), NVC56F_GP_ENTRY1_GET_HI (bits 39:32 of the
# address in entry bits 32..), NVC56F_GP_ENTRY1_LEVEL (bit 41 "subroutine"), NVC56F_GP_ENTRY1_LENGTH (bits 62:42, in dwords).
GP_ENTRY_LENGTH_SHIFT, GP_ENTRY_LENGTH_MASK = 42, 0x1fffff

# ---- struct nvgpu_notification (nvgpu.h): u32 time_stamp[2], u32 info32, u16 info16, u16 status ----
NOTIFICATION_INFO32, NOTIFICATION_STATUS = 8, 14
CHANNEL_FIFO_ERROR_MMU_ERR_FLT = 31           # nvgpu.h NVGPU_CHANNEL_FIFO_ERROR_MMU_ERR_FLT
CHANNEL_GR_EXCEPTION = 13                     # nvgpu.h NVGPU_CHANNEL_GR_EXCEPTION

# ---- host methods (open-gpu-doc classes/host/clc56f.h, byte offsets of the method) ----
HOST_SET_OBJECT, HOST_NON_STALL_INTR = 0x0, 0x20
HOST_SEM_ADDR_LO, HOST_SEM_ADDR_HI, HOST_SEM_PAYLOAD_LO, HOST_SEM_PAYLOAD_HI, HOST_SEM_EXECUTE = 0x5c, 0x60, 0x64, 0x68, 0x6c
SEM_OP_RELEASE, SEM_OP_ACQ_CIRC_GEQ, SEM_OP_ACQ_AND, SEM_OP_ACQ_NOR = 1, 3, 4, 5   # NVC56F_SEM_EXECUTE_OPERATION_*
# copy engine (open-gpu-doc classes/dma/clc7b5.h)
DMA_LAUNCH, DMA_SEM_ADDR_HI, DMA_SEM_ADDR_LO, DMA_SEM_PAYLOAD = 0x300, 0x240, 0x244, 0x248
DMA_OFFSET_IN_HI, DMA_OFFSET_IN_LO, DMA_OFFSET_OUT_HI, DMA_OFFSET_OUT_LO, DMA_LINE_LENGTH_IN = 0x400, 0x404, 0x408, 0x40c, 0x418
# compute (open-gpu-doc classes/compute/clc7c0.h): SEND_PCAS_A = QMD address >> 8; SEND_SIGNALING_PCAS2_B launches it
COMPUTE_SEND_PCAS_A, COMPUTE_SEND_SIGNALING_PCAS2_B = 0x2b4, 0x2c0
QMD_SIZE = 0x100                              # open-gpu-doc classes/compute/clc6c0qmd.h: QMD V03_00 is 64 words
MAX_SHARED_MEMORY = 100 << 10                 # ga10b: 100 KiB of shared memory per CTA (CUDA sm_87 limit)
KERNEL_PARAM_OFFSET = 0x160                   # constant bank 0 offset of kernel parameters on sm_70+; the fake compiler states it in
                                              # EIATTR_PARAM_CBANK as nvcc does, and tinygrad's loader honours it

# ---- L4T release (/etc/nv_tegra_release, first line "# R36 (release), REVISION: 4.4, ...") ----
L4T_RELEASE = "# R36 (release), REVISION: 4.4, GCID: 0, BOARD: generic, EABI: aarch64, DATE: fake"

# Rules the fake enforces that the kernel does not: each is a hardware observation or a guard against our own bugs.
STRICTER_THAN_KERNEL = {
  "ring of more than 64 KiB refused with EFBIG": "hardware observation, FACTS pitfall 1: a 3 MiB ring froze a real Orin at ALLOC_OBJ_CTX",
  "only FIXED_OFFSET reservations, only 4 KiB map page size": "not emulated beyond what the backend uses (the kernel accepts more)",
  "NVMAP_IOC_ALLOC align must be a power of two": "unverified in nvmap's source; the backend always passes 4 KiB",
}
