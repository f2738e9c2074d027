"""What the fake Orin knows about nvgpu, nvmap and the ga10b GPU, transcribed from public sources -- never from backend/uapi.py.

Each entry names where it comes from. Paths are in these public repositories (the L4T r36 kernel sources and NVIDIA's
class headers); each file is cited at the one commit listed for it:
  NVGPU  = nvidia-mirror/linux-nvgpu @ 21cb70f58d56749ccdd6b6dd830951790a1d39b4: include/uapi/linux/nvgpu-ctrl.h,
           include/uapi/linux/nvgpu-as.h (AS), drivers/gpu/nvgpu/os/linux/vm.c. The same repository's
           include/uapi/linux/nvgpu.h is stored only @ 31a4701931202d0cc4f9859c34d07a589ee6b50a: `nvgpu.h:N` is that text.
  NVMAP  = sradcliffe-nottinghamspirk/linux-nv-oot @ 30ebc1a6396f73402587d2d43567e1e8264dbcaf (include/uapi/linux/nvmap.h,
           the r36 out-of-tree header). OE4T/linux-tegra-5.10's header (r35, @0516cd94) lacks nvmap_alloc_handle.numa_nid,
           so its NVMAP_IOC_ALLOC is 16 bytes, not the 20 used here: r36 is the source of this layout. The kernel-side
           include/linux/nvmap.h (heaps, cache flags; cited `linux/nvmap.h:N`) is the same repository
           @ 30e3826bc46e454aa7da75b6367d8118f237bfb3.
  OE4T   = OE4T/linux-tegra-5.10 (the nvgpu tree of r35; the r36 nvgpu tree above has no ga10b hw headers stored):
           drivers/gpu/nvgpu/include/nvgpu/hw/ga10b/hw_ram_ga10b.h and hw_func_ga10b.h
           @ 3e43f92f211b2fd9c039321ce292351f12b65876, drivers/gpu/nvgpu/include/nvgpu/class.h
           @ 3d9c67a0e7fca0ba44d57a094d37f62017a1b0a2. No hw_usermode_ga10b.h is stored anywhere: on ga10b the
           usermode page is the NV_FUNC registers of hw_func_ga10b.h.
  OGKM   = NVIDIA/open-gpu-kernel-modules: kernel-open/nvidia-uvm/clc56f.h and src/common/sdk/nvidia/inc/class/clc7c0.h
           @ 1739a20efc4acb55fd1dc53dcc66057b70c2613c, kernel-open/nvidia-uvm/clc7b5.h
           @ 54d69484da940413ba6017df9cf43bed8b75da46 (open-gpu-doc's stored tree has none of clc56f/clc7b5/clc7c0).
  LINUX  = torvalds/linux @ 088fecfbb2c8a3890918fc614a7e1e1ccdd16c83 (include/uapi/asm-generic/ioctl.h)
  TG     = tinygrad 0.14.0, the installed wheel: tinygrad/runtime/autogen/nv_570.py, tinygrad/runtime/ops_nv.py. The QMD V03
           layout (clc6c0qmd.h) is in no stored NVIDIA source; nv_570.py transcribes it and fake_driver.py reads it from there.
  FACTS  = shared/docs/tegra-nvgpu-facts.md   (sizes and offsets obtained by compiling the r36.4 UAPI headers)
A citation is `file:N NAME`, N the line in the stored text at the commit above (counted from the text as read_file returns
it). Every entry has one; where no stored source has the value, the comment says so and cites FACTS:N or TG instead.
Two layouts follow FACTS, not the pinned text, which is older than r36.4: nvgpu_gpu_characteristics (nvgpu-ctrl.h:219 has
no `__s32 numa_domain_id` after num_gpc, so there it is 320 bytes with every offset from num_tpc_per_gpc on 8 lower) and
nvgpu_channel_setup_bind_args (nvgpu.h:1043 has no gpfifo_gpu_va/userd_gpu_va/usermode_mmio_gpu_va, so there it is 80
bytes). The index does hold newer copies of both headers with those fields, but find_string does not name their repository.
Rules that the kernel does not enforce but the fake does are listed in STRICTER_THAN_KERNEL with the reason.
"""
import ctypes

u8, u16, u32, u64, s16, s32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int16, ctypes.c_int32

# ---- ioctl encoding: ioctl.h:69 _IOC (dir<<30 | size<<16 | type<<8 | nr; shifts :44-:47, 14 size bits :32) ----
IOC_WRITE, IOC_READ = 1, 2                    # ioctl.h:62 _IOC_WRITE 1U, :66 _IOC_READ 2U
def ioc(direction:int, magic:str, nr:int, size:int) -> int: return (direction << 30) | (size << 16) | (ord(magic) << 8) | nr

# ---- argument layouts, one class per UAPI struct, fields in header order ----
class alloc_as(ctypes.Structure):          # nvgpu-ctrl.h:408 struct nvgpu_alloc_as_args
  _fields_ = [("big_page_size", u32), ("as_fd", s32), ("flags", u32), ("reserved", u32), ("va_range_start", u64), ("va_range_end", u64),
              ("va_range_split", u64), ("padding", u32 * 6)]
class get_characteristics(ctypes.Structure):  # nvgpu-ctrl.h:358 struct nvgpu_gpu_get_characteristics
  _fields_ = [("buf_size", u64), ("buf_addr", u64)]
class open_tsg(ctypes.Structure):          # nvgpu-ctrl.h:466 struct nvgpu_gpu_open_tsg_args
  _fields_ = [("tsg_fd", u32), ("flags", u32), ("source_device_instance_id", u64), ("share_token", u64)]
class open_channel(ctypes.Structure):      # nvgpu-ctrl.h:501 struct nvgpu_gpu_open_channel_args (union in.runlist_id / out.channel_fd)
  _fields_ = [("value", s32)]
class as_bind_channel(ctypes.Structure):   # nvgpu-as.h:90 struct nvgpu_as_bind_channel_args
  _fields_ = [("channel_fd", u32)]
class as_alloc_space(ctypes.Structure):    # nvgpu-as.h:58 struct nvgpu_as_alloc_space_args (union o_a)
  _fields_ = [("pages", u64), ("page_size", u32), ("flags", u32), ("offset", u64), ("padding", u32 * 2)]
class as_map_buffer_ex(ctypes.Structure):  # nvgpu-as.h:216 struct nvgpu_as_map_buffer_ex_args
  _fields_ = [("flags", u32), ("compr_kind", s16), ("incompr_kind", s16), ("dmabuf_fd", u32), ("page_size", u32), ("buffer_offset", u64),
              ("mapping_size", u64), ("offset", u64)]
class as_unmap_buffer(ctypes.Structure):   # nvgpu-as.h:344 struct nvgpu_as_unmap_buffer_args
  _fields_ = [("offset", u64)]
class tsg_bind_channel_ex(ctypes.Structure):  # nvgpu.h:34 struct nvgpu_tsg_bind_channel_ex_args (channel_fd is __s32 there)
  _fields_ = [("channel_fd", u32), ("subcontext_id", u32), ("reserved", u8 * 16)]
class tsg_create_subcontext(ctypes.Structure):  # nvgpu.h:160 struct nvgpu_tsg_create_subcontext_args (as_fd is __s32 there)
  _fields_ = [("type", u32), ("as_fd", u32), ("veid", u32), ("reserved", u32)]
class channel_wdt(ctypes.Structure):       # nvgpu.h:1197 struct nvgpu_channel_wdt_args
  _fields_ = [("wdt_status", u32), ("timeout_ms", u32)]
class alloc_obj_ctx(ctypes.Structure):     # nvgpu.h:1024 struct nvgpu_alloc_obj_ctx_args
  _fields_ = [("class_num", u32), ("flags", u32), ("obj_id", u64)]
class set_error_notifier(ctypes.Structure):  # nvgpu.h:1168 struct nvgpu_set_error_notifier
  _fields_ = [("offset", u64), ("size", u64), ("mem", u32), ("padding", u32)]
class setup_bind(ctypes.Structure):        # nvgpu.h:1043 struct nvgpu_channel_setup_bind_args; the three *_gpu_va outs and the
  # 104-byte size are r36.4's (FACTS:32), absent from the pinned nvgpu.h (see the module docstring)
  _fields_ = [("num_gpfifo_entries", u32), ("num_inflight_jobs", u32), ("flags", u32), ("userd_dmabuf_fd", s32), ("gpfifo_dmabuf_fd", s32),
              ("work_submit_token", u32), ("userd_dmabuf_offset", u64), ("gpfifo_dmabuf_offset", u64), ("gpfifo_gpu_va", u64),
              ("userd_gpu_va", u64), ("usermode_mmio_gpu_va", u64), ("reserved", u32 * 9)]
class nvmap_create(ctypes.Structure):      # NVMAP nvmap.h:45 struct nvmap_create_handle (union size / fd)
  _fields_ = [("size_or_fd", u32), ("handle", u32)]
class nvmap_alloc(ctypes.Structure):       # nvmap.h:91 struct nvmap_alloc_handle (numa_nid at :96)
  _fields_ = [("handle", u32), ("heap_mask", u32), ("flags", u32), ("align", u32), ("numa_nid", s32)]

# name -> (fd kind, direction, magic, nr, layout or None for an integer argument, source)
IOCTLS = {
  "GET_CHARACTERISTICS": ("ctrl", 3, "G", 5, get_characteristics, "nvgpu-ctrl.h:1165 NVGPU_GPU_IOCTL_GET_CHARACTERISTICS"),
  "ALLOC_AS": ("ctrl", 3, "G", 8, alloc_as, "nvgpu-ctrl.h:1171 NVGPU_GPU_IOCTL_ALLOC_AS"),
  "OPEN_TSG": ("ctrl", 3, "G", 9, open_tsg, "nvgpu-ctrl.h:1173 NVGPU_GPU_IOCTL_OPEN_TSG"),
  "OPEN_CHANNEL": ("ctrl", 3, "G", 11, open_channel, "nvgpu-ctrl.h:1177 NVGPU_GPU_IOCTL_OPEN_CHANNEL"),
  "AS_BIND_CHANNEL": ("as", 3, "A", 1, as_bind_channel, "nvgpu-as.h:566 NVGPU_AS_IOCTL_BIND_CHANNEL"),
  "AS_UNMAP_BUFFER": ("as", 3, "A", 5, as_unmap_buffer, "nvgpu-as.h:572 NVGPU_AS_IOCTL_UNMAP_BUFFER"),
  "AS_ALLOC_SPACE": ("as", 3, "A", 6, as_alloc_space, "nvgpu-as.h:574 NVGPU_AS_IOCTL_ALLOC_SPACE"),
  "AS_MAP_BUFFER_EX": ("as", 3, "A", 7, as_map_buffer_ex, "nvgpu-as.h:576 NVGPU_AS_IOCTL_MAP_BUFFER_EX"),
  "TSG_BIND_CHANNEL_EX": ("tsg", 3, "T", 11, tsg_bind_channel_ex, "nvgpu.h:285 NVGPU_TSG_IOCTL_BIND_CHANNEL_EX"),
  "TSG_CREATE_SUBCONTEXT": ("tsg", 3, "T", 18, tsg_create_subcontext, "nvgpu.h:305 NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT"),
  "CHANNEL_ALLOC_OBJ_CTX": ("channel", 3, "H", 108, alloc_obj_ctx, "nvgpu.h:1294 NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX"),
  "CHANNEL_SET_ERROR_NOTIFIER": ("channel", 3, "H", 111, set_error_notifier, "nvgpu.h:1298 NVGPU_IOCTL_CHANNEL_SET_ERROR_NOTIFIER"),
  "CHANNEL_WDT": ("channel", IOC_WRITE, "H", 119, channel_wdt, "nvgpu.h:1312 NVGPU_IOCTL_CHANNEL_WDT (_IOW)"),
  "CHANNEL_SETUP_BIND": ("channel", 3, "H", 128, setup_bind, "nvgpu.h:1326 NVGPU_IOCTL_CHANNEL_SETUP_BIND (size 104 from FACTS:32)"),
  "NVMAP_CREATE": ("nvmap", 3, "N", 0, nvmap_create, "nvmap.h:270 NVMAP_IOC_CREATE"),
  "NVMAP_ALLOC": ("nvmap", IOC_WRITE, "N", 3, nvmap_alloc, "nvmap.h:276 NVMAP_IOC_ALLOC (_IOW)"),
  "NVMAP_FREE": ("nvmap", 0, "N", 4, None, "nvmap.h:280 NVMAP_IOC_FREE (_IO, the handle is the argument)"),
  "NVMAP_GET_FD": ("nvmap", 3, "N", 15, nvmap_create, "nvmap.h:314 NVMAP_IOC_GET_FD"),
}
NUMBERS = {ioc(d, m, nr, ctypes.sizeof(t) if t is not None else 0): name for name, (_, d, m, nr, t, _src) in IOCTLS.items()}

# ---- struct nvgpu_gpu_characteristics (nvgpu-ctrl.h:219); offsets and the 328-byte size from FACTS:22 (the compiled r36.4
# header, which has __s32 numa_domain_id after num_gpc; the pinned text does not -- see the module docstring) ----
CHARACTERISTICS_SIZE = 328
CHARACTERISTICS_OFFSETS = {"arch": (0, u32), "impl": (4, u32), "num_gpc": (12, u32), "num_tpc_per_gpc": (40, u32), "flags": (64, u64),
  "compute_class": (80, u32), "gpfifo_class": (84, u32), "dma_copy_class": (92, u32), "sm_arch_sm_version": (100, u32),
  "sm_arch_warp_count": (108, u32), "gpu_va_bit_count": (122, u8), "max_gpfifo_entries": (308, u32)}
# nvgpu-ctrl.h:133 NVGPU_GPU_FLAGS_SUPPORT_IO_COHERENCE, :137 _TSG_SUBCONTEXTS, :151 _USERMODE_SUBMIT (bit numbers also FACTS:22)
GPU_FLAGS_SUPPORT_IO_COHERENCE, GPU_FLAGS_SUPPORT_TSG_SUBCONTEXTS, GPU_FLAGS_SUPPORT_USERMODE_SUBMIT = 1 << 20, 1 << 22, 1 << 30

# ---- ga10b values: classes from class.h, SM version and VA width from FACTS ----
COMPUTE_CLASS, GPFIFO_CLASS, DMA_CLASS = 0xC7C0, 0xC76F, 0xC7B5    # class.h:112 AMPERE_COMPUTE_B, :114 AMPERE_CHANNEL_GPFIFO_B,
                                                                   # :110 AMPERE_DMA_COPY_B (also clc7c0.h:32, clc7b5.h:33; FACTS:13)
SM_VERSION, VA_BITS = 0x807, 40               # not in any stored header: FACTS:13 (sm_version 0x807), FACTS:15 (40-bit GPU VA)

# ---- flags and rules, each with its source ----
ALLOC_AS_FLAGS_UNIFIED_VA = 1 << 1           # nvgpu-ctrl.h:424 NVGPU_GPU_IOCTL_ALLOC_AS_FLAGS_UNIFIED_VA; :429-:430 split "must be zero if
                                              # UNIFIED_VA is set"
AS_PDE_ALIGN = 2 << 20                        # nvgpu-ctrl.h:427-:428 va_range_start/end "aligned by PDE"; 2 MiB and EINVAL from FACTS:23
ALLOC_SPACE_FLAGS_FIXED_OFFSET = 1 << 0       # nvgpu-as.h:50 NVGPU_AS_ALLOC_SPACE_FLAGS_FIXED_OFFSET
MAP_FLAGS_FIXED_OFFSET, MAP_FLAGS_CACHEABLE = 1 << 0, 1 << 2   # nvgpu-as.h:105 / :106 NVGPU_AS_MAP_BUFFER_FLAGS_FIXED_OFFSET / _CACHEABLE
# nvgpu-as.h:105-:112 NVGPU_AS_MAP_BUFFER_FLAGS_* and :114-:115 the 2-bit access field at bit 10; vm.c:45
# nvgpu_vm_translate_linux_flags() returns EINVAL for any other bit (vm.c:93-:95). IO_COHERENT (1 << 4, nvgpu-as.h:107,
# "DEPRECATED" :147) is accepted by vm.c but left out here: see STRICTER_THAN_KERNEL.
MAP_FLAGS_KNOWN = (1 << 0) | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 9) | (3 << 10) | (1 << 12)
NV_KIND_INVALID = -1                          # nvgpu-as.h:235 NV_KIND_INVALID; :232 "If neither ... is set, the map call will fail"
# vm.c:353 nvgpu_vm_map_buffer(): vm.c:380 "For regular maps we do not accept either an input address or a buffer_offset"
# (EINVAL) and vm.c:396 "map_size && non-fixed-mapping!" (EINVAL). nvgpu-as.h:186 page_size "If left unset this IOCTL will
# return -EINVAL"; :196 "regular (non-fixed) mappings require this field [buffer_offset] to be set to 0".
SUBCONTEXT_TYPE_ASYNC = 1                     # nvgpu.h:157 NVGPU_TSG_SUBCONTEXT_TYPE_ASYNC
WDT_DISABLE = 1                               # nvgpu.h:1201 NVGPU_IOCTL_CHANNEL_DISABLE_WDT. "Deterministic channels refuse a live
                                              # watchdog" is FACTS:30; no stored SETUP_BIND source says it
SETUP_BIND_FLAGS_DETERMINISTIC, SETUP_BIND_FLAGS_USERMODE_SUPPORT = 1 << 1, 1 << 3   # nvgpu.h:1075 / :1088 NVGPU_CHANNEL_SETUP_BIND_FLAGS_*
# nvgpu.h:1057 VPR_ENABLED .. :1088 USERMODE_SUPPORT are bits 0-3; bit 4 (USERMODE_GPU_MAP_RESOURCES_SUPPORT) is r36.4's and
# not in the pinned nvgpu.h. nvgpu.h:1045-:1052 num_gpfifo_entries "Must be power of 2", 2 .. 2^28 with USERMODE_SUPPORT.
SETUP_BIND_FLAGS_KNOWN = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4)
NVMAP_HEAP_IOVMM, NVMAP_HEAP_CARVEOUT_GENERIC = 1 << 30, 1 << 0   # linux/nvmap.h:28 NVMAP_HEAP_IOVMM, :37 NVMAP_HEAP_CARVEOUT_GENERIC
NVMAP_HEAP_SYSMEM = 1 << 31                   # not in either r36 nvmap header (uapi nvmap.h, linux/nvmap.h): value and the ENOMEM
                                              # it answers on Orin from FACTS:39
NVMAP_CACHE_MASK = 0x1f                       # linux/nvmap.h:42-:45 NVMAP_HANDLE_UNCACHEABLE .. _CACHEABLE are 0..3 and :46
                                              # NVMAP_HANDLE_CACHE_FLAG is 0x3; 0x1f also takes :48-:50 SECURE, KIND_SPECIFIED,
                                              # COMPR_SPECIFIED, which the fake then refuses (STRICTER_THAN_KERNEL)
PAGE = 0x1000

# ---- usermode submit, from the ga10b hardware headers (OE4T drivers/gpu/nvgpu/include/nvgpu/hw/ga10b/) ----
USERD_GP_GET_OFFSET = 34 * 4                  # hw_ram_ga10b.h:147 ram_userd_gp_get_w() = 34 (words); clc56f.h:62 GPGet 0088
USERD_GP_PUT_OFFSET = 35 * 4                  # hw_ram_ga10b.h:148 ram_userd_gp_put_w() = 35; clc56f.h:63 GPPut 008c; FACTS:49
USERMODE_BASE, USERMODE_SIZE = 0x30000, 0x10000   # hw_func_ga10b.h:64 func_cfg0_r() = 0x30000 (the usermode page); 64 KiB from FACTS:48
DOORBELL_OFFSET = 0x30090 - USERMODE_BASE     # hw_func_ga10b.h:63 func_doorbell_r() = 0x00030090, so 0x90 into the page (FACTS:49)
USERD_SIZE = 0x1000                           # FACTS:31 (step 10, 4 KiB USERD)
# GPFIFO entry: clc56f.h:272 NVC56F_GP_ENTRY0_GET (address[31:2]), :274 NVC56F_GP_ENTRY1_GET_HI (bits 39:32 of the address in
# entry bits 32..), :275 NVC56F_GP_ENTRY1_LEVEL (bit 41, :277 SUBROUTINE), :278 NVC56F_GP_ENTRY1_LENGTH (bits 62:42, in dwords).
GP_ENTRY_LENGTH_SHIFT, GP_ENTRY_LENGTH_MASK = 42, 0x1fffff

# ---- struct nvgpu_notification (nvgpu.h:1175): u32 time_stamp[2], u32 info32 (:1179), u16 info16, u16 status (:1192) ----
NOTIFICATION_INFO32, NOTIFICATION_STATUS = 8, 14
CHANNEL_FIFO_ERROR_MMU_ERR_FLT = 31           # nvgpu.h:1186 NVGPU_CHANNEL_FIFO_ERROR_MMU_ERR_FLT
CHANNEL_GR_EXCEPTION = 13                     # nvgpu.h:1183 NVGPU_CHANNEL_GR_EXCEPTION

# ---- host methods (clc56f.h, byte offsets of the method; GPFIFO_B 0xC76F uses the same host methods, no clc76f.h is stored) ----
HOST_SET_OBJECT, HOST_NON_STALL_INTR = 0x0, 0x20   # clc56f.h:69 NVC56F_SET_OBJECT, :111 NVC56F_NON_STALL_INTERRUPT
# clc56f.h:207 NVC56F_SEM_ADDR_LO, :209 _ADDR_HI, :211 _PAYLOAD_LO, :213 _PAYLOAD_HI, :215 NVC56F_SEM_EXECUTE
HOST_SEM_ADDR_LO, HOST_SEM_ADDR_HI, HOST_SEM_PAYLOAD_LO, HOST_SEM_PAYLOAD_HI, HOST_SEM_EXECUTE = 0x5c, 0x60, 0x64, 0x68, 0x6c
SEM_OP_RELEASE, SEM_OP_ACQ_CIRC_GEQ, SEM_OP_ACQ_AND, SEM_OP_ACQ_NOR = 1, 3, 4, 5   # clc56f.h:218 / :220 / :221 / :222 _OPERATION_*
# SEM_EXECUTE fields and the pushbuffer method header (fake_driver.py still spells these as literals):
SEM_EXECUTE_OPERATION_MASK = 0x7              # clc56f.h:216 NVC56F_SEM_EXECUTE_OPERATION 2:0
SEM_EXECUTE_PAYLOAD_SIZE_BIT, SEM_EXECUTE_RELEASE_TIMESTAMP_BIT = 24, 25   # clc56f.h:230 _PAYLOAD_SIZE 24:24, :233 _RELEASE_TIMESTAMP 25:25
PB_OPCODE_SHIFT, PB_OPCODE_INC_METHOD = 29, 1  # clc56f.h:315 NVC56F_DMA_INCR_OPCODE 31:29, :316 _OPCODE_VALUE 1 (:304 SEC_OP_INC_METHOD)
PB_COUNT_SHIFT, PB_COUNT_MASK = 16, 0x1fff     # clc56f.h:314 NVC56F_DMA_INCR_COUNT 28:16
PB_SUBCHANNEL_SHIFT, PB_SUBCHANNEL_MASK = 13, 0x7   # clc56f.h:313 NVC56F_DMA_INCR_SUBCHANNEL 15:13
PB_ADDRESS_MASK = 0xfff                       # clc56f.h:312 NVC56F_DMA_INCR_ADDRESS 11:0 (method offset in dwords)
# copy engine (clc7b5.h): :84 NVC7B5_LAUNCH_DMA, :47 SET_SEMAPHORE_A, :49 _B, :51 SET_SEMAPHORE_PAYLOAD
DMA_LAUNCH, DMA_SEM_ADDR_HI, DMA_SEM_ADDR_LO, DMA_SEM_PAYLOAD = 0x300, 0x240, 0x244, 0x248
# clc7b5.h:161 NVC7B5_OFFSET_IN_UPPER, :163 _IN_LOWER, :165 OFFSET_OUT_UPPER, :167 _OUT_LOWER, :173 LINE_LENGTH_IN
DMA_OFFSET_IN_HI, DMA_OFFSET_IN_LO, DMA_OFFSET_OUT_HI, DMA_OFFSET_OUT_LO, DMA_LINE_LENGTH_IN = 0x400, 0x404, 0x408, 0x40c, 0x418
DMA_LAUNCH_TRANSFER_NON_PIPELINED = 2         # clc7b5.h:85 LAUNCH_DMA_DATA_TRANSFER_TYPE 1:0, :88 _NON_PIPELINED 2
DMA_LAUNCH_SEMAPHORE_SHIFT, DMA_LAUNCH_SEMAPHORE_ONE_WORD, DMA_LAUNCH_SEMAPHORE_FOUR_WORD = 3, 1, 2   # clc7b5.h:95 4:3, :99, :100
# compute (clc7c0.h): :441 NVC7C0_SEND_PCAS_A (QMD address >> 8, :442); :456 NVC7C0_SEND_SIGNALING_PCAS2_B launches it
COMPUTE_SEND_PCAS_A, COMPUTE_SEND_SIGNALING_PCAS2_B = 0x2b4, 0x2c0
QMD_SIZE = 0x100                              # QMD V03_00 is 2048 bits: TG nv_570.py:14398-:14673 NVC6C0_QMDV03_00_* (:14673
                                              # DEBUG_ID_LOWER = bits 2047:2016); :14516 QMD_MAJOR_VERSION, 3 in TG ops_nv.py:299
MAX_SHARED_MEMORY = 100 << 10                 # not in any stored header (a guard of the fake). An Orin deviceQuery (stored page
                                              # gist.github.com/atinfinity/8cede915acda05d0ff427c09604735dd) reports 167936 bytes
                                              # of shared memory per SM; 100 KiB per CTA is sm_86's limit, so this is conservative
KERNEL_PARAM_OFFSET = 0x160                   # constant bank 0 offset of kernel parameters: TG ops_nv.py:251 (constbufs {0: (0,
                                              # 0x160)}) and :271 (EIATTR_PARAM_CBANK sets it); the fake compiler states it in
                                              # EIATTR_PARAM_CBANK as nvcc does, and tinygrad's loader honours it

# ---- L4T release (/etc/nv_tegra_release, first line "# R36 (release), REVISION: 4.4, ..."); FACTS:5 (L4T r36.4.4) ----
L4T_RELEASE = "# R36 (release), REVISION: 4.4, GCID: 0, BOARD: generic, EABI: aarch64, DATE: fake"

# Rules the fake enforces that the kernel does not: each is a hardware observation or a guard against our own bugs.
STRICTER_THAN_KERNEL = {
  "ring of more than 64 KiB refused with EFBIG": "hardware observation, FACTS pitfall 1 (FACTS:54): a 3 MiB ring froze a real Orin at "
                                                 "ALLOC_OBJ_CTX",
  "only FIXED_OFFSET reservations, only 4 KiB map page size": "not emulated beyond what the backend uses (the kernel accepts more)",
  "NVMAP_IOC_ALLOC align must be a power of two": "unverified in nvmap's source; the backend always passes 4 KiB",
  "map flag IO_COHERENT (1 << 4) refused with EINVAL": "vm.c:60 accepts it (deprecated, nvgpu-as.h:147); the backend never sets it",
  "NVMAP_IOC_ALLOC flags bits 2-4 refused with EINVAL": "NVMAP_CACHE_MASK is 0x1f, not linux/nvmap.h:46 NVMAP_HANDLE_CACHE_FLAG 0x3, so "
                                                        "SECURE/KIND_SPECIFIED/COMPR_SPECIFIED (:48-:50) count as a bad cache mode",
  "ioctl argument smaller than _IOC_SIZE refused with EFAULT": "the kernel copies _IOC_SIZE bytes and cannot tell; the fake refuses "
                                                               "so as not to overrun this process",
}
