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
Driver sources for the rules (what the kernel refuses, with which errno), one commit per file:
  nvidia-mirror/linux-nvgpu, drivers/gpu/nvgpu/:
    @ 675edd5053be6db6303b0eadcfe2606bfc473af8  os/linux/ioctl_ctrl.c, os/linux/ioctl_tsg.c, common/fifo/tsg.c
    @ 2a865e3aad75717dbc00dcde485755fe2d637a86  os/linux/ioctl_channel.c
    @ 5b55088970c42c1640aeab983e2103f785f231a4  common/fifo/channel.c, hal/mm/mm_gp10b_fusa.c
    @ c6d5fb348cb303057155ded54d68036eefe0d5b7  os/linux/linux-channel.c
    @ b1d7c77d8eafc3fc71b6b021aad2768822250f82  common/mm/as.c, os/linux/ioctl_as.c
    @ 3fb2a2e209be9167d222b08b7d61c80c76414a56  common/gr/gr_setup.c
    @ 21cb70f58d56749ccdd6b6dd830951790a1d39b4  os/linux/vm.c (as above)
  OE4T/linux-tegra-5.10, drivers/gpu/nvgpu/ (not stored in linux-nvgpu):
    @ a252cc244a3729eb7f71243c0087f1c4dca52748  common/mm/vm_area.c
    @ 00d7b53b73c9051c0b9f068c43b1adfd4433c565  hal/mm/gmmu/gmmu_gm20b.c
  sradcliffe-nottinghamspirk/linux-nv-oot, drivers/video/tegra/nvmap/:
    @ ae282d2c222cbceae04ada65a4f99e40a41f912b  nvmap_ioctl.c
    @ c4a88d65158baa2c5b38ab512c72d967f88e7724  nvmap_dev.c
    @ 4cf8c8066974d494c498747bd901a4c07c6a8cd5  nvmap_alloc.c (cited by function: its lines were not counted)
  LINUX drivers/dma-buf/dma-buf.c and mm/mmap.c are cited by function (standard kernel behaviour; lines not counted).
  TG hcq.py = tinygrad/runtime/support/hcq.py of the same wheel.
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

# ---- ioctl dispatch: how each driver answers a number it does not take ----
# nvgpu: ioctl_ctrl.c:2271-2275, ioctl_tsg.c:929-933, ioctl_channel.c:1203-1207, ioctl_as.c:466-470 refuse a number whose
# _IOC_TYPE is not the fd's magic, whose _IOC_NR is 0 or past *_IOCTL_LAST, or whose _IOC_SIZE exceeds *_MAX_ARG_SIZE, with
# EINVAL; a number that passes and matches no case is ENOTTY (ioctl_ctrl.c:2622-2624, ioctl_tsg.c:1132-1135,
# ioctl_channel.c:1622-1624, ioctl_as.c:561-562). The LAST / MAX_ARG_SIZE bounds are
# not emulated (such a number gets ENOTTY here): only TSG's is read (nvgpu.h:320-321 NVGPU_TSG_IOCTL_LAST = 21).
# nvmap: nvmap_dev.c:351-352 wrong magic -> ENOTTY, :354-355 nr > NVMAP_IOC_MAXNR -> ENOTTY, :365 default ENOTTY.
IOCTL_MAGIC = {"ctrl": "G", "as": "A", "tsg": "T", "channel": "H", "nvmap": "N"}   # the magics of IOCTLS' own entries
DISPATCH_BAD_MAGIC_ERRNO = {"ctrl": "EINVAL", "as": "EINVAL", "tsg": "EINVAL", "channel": "EINVAL", "nvmap": "ENOTTY"}

# ---- struct nvgpu_gpu_characteristics (nvgpu-ctrl.h:219); offsets and the 328-byte size from FACTS:22 (the compiled r36.4
# header, which has __s32 numa_domain_id after num_gpc; the pinned text does not -- see the module docstring) ----
CHARACTERISTICS_SIZE = 328
CHARACTERISTICS_OFFSETS = {"arch": (0, u32), "impl": (4, u32), "num_gpc": (12, u32), "num_tpc_per_gpc": (40, u32), "flags": (64, u64),
  "compute_class": (80, u32), "gpfifo_class": (84, u32), "dma_copy_class": (92, u32), "sm_arch_sm_version": (100, u32),
  "sm_arch_warp_count": (108, u32), "gpu_va_bit_count": (122, u8), "max_gpfifo_entries": (308, u32)}
# nvgpu-ctrl.h:133 NVGPU_GPU_FLAGS_SUPPORT_IO_COHERENCE, :137 _TSG_SUBCONTEXTS, :151 _USERMODE_SUBMIT (bit numbers also FACTS:22)
GPU_FLAGS_SUPPORT_IO_COHERENCE, GPU_FLAGS_SUPPORT_TSG_SUBCONTEXTS, GPU_FLAGS_SUPPORT_USERMODE_SUBMIT = 1 << 20, 1 << 22, 1 << 30
# ioctl_ctrl.c:560-570 copies min(buf_size, sizeof) bytes only when buf_size > 0 (a bad buf_addr fails copy_to_user: EFAULT);
# :572-573 then reports sizeof(gpu) in buf_size.

# ---- ga10b values: classes from class.h, SM version and VA width from FACTS ----
COMPUTE_CLASS, GPFIFO_CLASS, DMA_CLASS = 0xC7C0, 0xC76F, 0xC7B5    # class.h:112 AMPERE_COMPUTE_B, :114 AMPERE_CHANNEL_GPFIFO_B,
                                                                   # :110 AMPERE_DMA_COPY_B (also clc7c0.h:32, clc7b5.h:33; FACTS:13)
SM_VERSION = 0x807                            # not in any stored header: FACTS:13 (sm_version 0x807)
VA_BITS = 40                                  # ioctl_ctrl.c:506 gpu.gpu_va_bit_count = 40 (also FACTS:15)
MAX_GPFIFO_ENTRIES = 1 << 28                  # ioctl_ctrl.c:557-558 rounddown_pow_of_two(U32_MAX / gpfifo entry size 8);
                                              # nvgpu.h:1045-:1052 "2 .. 2^28" with USERMODE_SUPPORT
GPU_ARCH, GPU_IMPL = 0x170, 0xB               # ioctl_ctrl.c:450-451 report g->params.gpu_arch / gpu_impl; nvgpu/gk20a.h's last
                                              # define NVGPU_GPUID_GA10B 0x17B is arch + impl (nvgpu_init_hal switches on the sum);
                                              # the gk20a.h line was not counted
# The kernel reports the GR configuration it reads from the GPU (ioctl_ctrl.c:402 num_gpc, :412 num_tpc_per_gpc, :492
# sm_arch_warp_count): no stored source has ga10b's numbers. The fake describes a Jetson AGX Orin 64GB -- 16 SMs as 2 GPCs x 4
# TPCs x 2 SMs -- and 48 warps per SM (1536 threads, GA10x). These three are the fake's configuration, not transcriptions.
NUM_GPC, NUM_TPC_PER_GPC, SM_ARCH_WARP_COUNT = 2, 4, 48

# ---- flags and rules, each with its source ----
ALLOC_AS_FLAGS_UNIFIED_VA = 1 << 1           # nvgpu-ctrl.h:424 NVGPU_GPU_IOCTL_ALLOC_AS_FLAGS_UNIFIED_VA; :429-:430 split "must be zero if
                                              # UNIFIED_VA is set"
AS_PDE_ALIGN = 2 << 20                        # nvgpu-ctrl.h:427-:428 va_range_start/end "aligned by PDE"; 2 MiB and EINVAL from FACTS:23
# ALLOC_AS (ioctl_ctrl.c:680-686 -> as.c gk20a_vm_alloc_share), every refusal EINVAL: as.c:73-76 big_page_size 0 = default, no
# big pages; :77-79 otherwise a power of two, :81-84 one of the available big page sizes; :91-94 start non-zero and PDE aligned,
# :96-99 end likewise, :101-103 start < end; :107-110 with UNIFIED_VA or no big pages the split must be 0, :113-122 otherwise
# it must be non-zero, PDE aligned and inside the range. :133-140 a failed nvgpu_vm_init() -> ENOMEM: vm.c (linux-nvgpu
# common/mm/vm.c @03533066aa9ece480ada0f1b26e69983bc0ca381, nvgpu_vm_init_attributes(); lines not counted) fails when
# kernel_reserved + user_size + low_hole, i.e. CHANNEL_KERNEL_SIZE + va_range_end, exceeds the default aperture.
DEFAULT_APERTURE_SIZE = 1 << 49               # mm_gp10b_fusa.c:80 *aperture_size = BIT64(49) ("Max VA Bits = 49", :77)
CHANNEL_KERNEL_SIZE = 1 << 32                 # mm_gp10b_fusa.c:94 *kernel_size = BIT64(32), mm->channel.kernel_size (mm.c
                                              # nvgpu_init_mm_setup_sw reads get_default_va_sizes; ga10b's HAL table points it at
                                              # gp10b_mm_get_default_va_sizes -- neither line counted)
BIG_PAGE_SIZES = (64 << 10) | (128 << 10)     # gmmu_gm20b.c:30-33 gm20b_mm_get_big_page_sizes() SZ_64K | SZ_128K, the HAL every
                                              # stored nvgpu chip (ga10b included) points get_big_page_sizes at
# OPEN_TSG (ioctl_ctrl.c:708-735) reads no argument field: flags, source_device_instance_id and share_token are not checked.
ALLOC_SPACE_FLAGS_FIXED_OFFSET = 1 << 0       # nvgpu-as.h:50 NVGPU_AS_ALLOC_SPACE_FLAGS_FIXED_OFFSET
# ALLOC_SPACE (vm_area.c nvgpu_vm_area_alloc): :104-119 page_size must be one of the VM's page sizes (4 KiB, or its big page
# size) and :128-130 big only if the VM has big pages, else EINVAL; :141-154 a FIXED_OFFSET range the allocator cannot give
# (overlapping, outside the VM, misaligned, empty) -> ENOMEM.
MAP_FLAGS_FIXED_OFFSET, MAP_FLAGS_CACHEABLE = 1 << 0, 1 << 2   # nvgpu-as.h:105 / :106 NVGPU_AS_MAP_BUFFER_FLAGS_FIXED_OFFSET / _CACHEABLE
MAP_FLAGS_TEGRA_RAW = 1 << 12                 # nvgpu-as.h:112 NVGPU_AS_MAP_BUFFER_FLAGS_TEGRA_RAW
MAP_ACCESS_SHIFT, MAP_ACCESS_MASK = 10, 0x3   # nvgpu-as.h:114 ACCESS_BITMASK_OFFSET 10U, :115 ACCESS_BITMASK_SIZE 2U
MAP_ACCESS_READ_WRITE = 2                     # nvgpu-as.h:119 NVGPU_AS_MAP_BUFFER_ACCESS_READ_WRITE; vm.c:109-111 refuses a larger
                                              # value (3) with EINVAL, returned at vm.c:417-421
# vm.c:424-428 TEGRA_RAW without NVGPU_SUPPORT_TEGRA_RAW -> EINVAL. No stored nvgpu source enables NVGPU_SUPPORT_TEGRA_RAW
# (find_string finds only its definition, this check and gmmu.c's use), so the fake refuses the flag.
# nvgpu-as.h:105-:112 NVGPU_AS_MAP_BUFFER_FLAGS_* and :114-:115 the 2-bit access field at bit 10; vm.c:45
# nvgpu_vm_translate_linux_flags() returns EINVAL for any other bit (vm.c:93-:95). IO_COHERENT (1 << 4, nvgpu-as.h:107,
# "DEPRECATED" :147) is accepted by vm.c:61-64 but left out here: see STRICTER_THAN_KERNEL.
MAP_FLAGS_KNOWN = (1 << 0) | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 9) | (3 << 10) | (1 << 12)
NV_KIND_INVALID = -1                          # nvgpu-as.h:235 NV_KIND_INVALID; :232 "If neither ... is set, the map call will fail"
# vm.c:353 nvgpu_vm_map_buffer() checks, in order: vm.c:372-376 the fd is a dma-buf (dma_buf_get's error: EBADF for a number
# that is no open file, EINVAL for a file that is no dma-buf); vm.c:380-388 "For regular maps we do not accept either an input
# address or a buffer_offset" (EINVAL); vm.c:395-398 "map_size && non-fixed-mapping!" (EINVAL); vm.c:417-421 the access
# field; vm.c:424-428 TEGRA_RAW; vm.c:431-434 unknown flags. nvgpu-as.h:186 page_size "If left unset this IOCTL will return
# -EINVAL"; :196 "regular (non-fixed) mappings require this field [buffer_offset] to be set to 0". No free GPU VA left ->
# ENOMEM (the GMMU map path: nvgpu_vm_alloc_va() returns 0, "failed to allocate va space", -ENOMEM; cited by that message,
# every stored nvgpu version has it; lines not counted).
DMABUF_GET_ERRNO_NOT_FD, DMABUF_GET_ERRNO_NOT_DMABUF = "EBADF", "EINVAL"   # dma-buf.c dma_buf_get(): fget() fails / !is_dma_buf_file
# Version skew, resolved for r36: ioctl_as.c:110-116 (@b1d7c77d, 2022) refuses a MAP_BUFFER_EX without
# NVGPU_AS_MAP_BUFFER_FLAGS_DIRECT_KIND_CTRL (1 << 8) with EINVAL. The pinned r36 header has no such flag (nvgpu-as.h:105-:112
# skip bit 8) and the pinned vm.c:45-95 translates no bit 8, so there bit 8 is an "Extra flag" (EINVAL, vm.c:93-95): the r36
# driver cannot require it, and FACTS:41 (maps made on r36.4.4) sets only CACHEABLE. The fake follows the r36 text.
# AS BIND_CHANNEL (ioctl_as.c:53-78): :63-65 not a channel fd -> EINVAL; :67-70 channel already bound to an AS -> EINVAL.
# AS UNMAP_BUFFER (ioctl_as.c:128-139): :136 nvgpu_vm_unmap() returns nothing and :138 the ioctl returns 0, whatever the offset.

# ---- TSG subcontexts (VEIDs) ----
SUBCONTEXT_TYPE_SYNC, SUBCONTEXT_TYPE_ASYNC = 0, 1   # nvgpu.h:151 NVGPU_TSG_SUBCONTEXT_TYPE_SYNC, :157 _ASYNC;
                                              # ioctl_tsg.c:866-869 any other type -> EINVAL, :872-876 as_fd not an AS -> EINVAL
MAX_SUBCTX_COUNT = 64                         # nvgpu.h:169-:170 "For Volta+ chips (up to T234 Legacy mode), the HW-specific range is
                                              # [0..63]"; ioctl_tsg.c:879 / :139 take it from the GPU instance
SYNC_VEID, ASYNC_VEID_BASE = 0, 1             # nvgpu.h:171 "0th subcontext is SYNC subcontext and remaining are ASYNC";
                                              # tsg.c:239-252 SYNC takes VEID 0 (ENOSPC if taken, :242-244); tsg.c:254-280 ASYNC takes
                                              # the first free of 1..63 (:275-276 "ASYNC VEIDs start from 1", MAX_SYNC_SUBCONTEXTS 1 at
                                              # :237) and falls back to the SYNC VEID when none is free (:266-272); tsg.c:309-311 the VEID
                                              # keeps the first AS it was created with
# BIND_CHANNEL_EX (ioctl_tsg.c:107-175): :130-133 not a channel fd -> EINVAL; :141-145 subcontext_id >= MAX_SUBCTX_COUNT -> EINVAL;
# :155 -> tsg.c:375-384 subcontext_id 0 without a SYNC subcontext creates it with the channel's AS; :161-164 -> tsg.c:402-404 the
# channel's AS must be the VEID's (EINVAL; this also refuses an uncreated VEID and a channel not yet bound to an AS);
# :167 -> tsg.c:425-427 a channel already in a TSG -> EINVAL. The reserved bytes are not read.
WDT_DISABLE, WDT_ENABLE = 1 << 0, 1 << 1      # nvgpu.h:1201 / :1202 NVGPU_IOCTL_CHANNEL_DISABLE_WDT / _ENABLE_WDT. ioctl_channel.c:309-310
                                              # keeps only these bits; :316-322 a deterministic channel refuses anything but DISABLE
                                              # (EINVAL); :325-330 neither bit -> EINVAL
# OPEN_CHANNEL (ioctl_channel.c:480-509): runlist_id -1 is the GR runlist (:500-501); another id must be one of the GPU
# instance's runlists or EINVAL (:503-507).
SETUP_BIND_FLAGS_DETERMINISTIC, SETUP_BIND_FLAGS_USERMODE_SUPPORT = 1 << 1, 1 << 3   # nvgpu.h:1075 / :1088 NVGPU_CHANNEL_SETUP_BIND_FLAGS_*
# ioctl_channel.c:616-633 translates bits 0-3 (VPR, DETERMINISTIC, REPLAYABLE_FAULTS, USERMODE; nvgpu.h:1057-:1088) and drops
# every other bit: unknown SETUP_BIND flags are ignored, not refused.
SETUP_BIND_FLAGS_TRANSLATED = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3)
# SETUP_BIND, in the kernel's order (every refusal EINVAL unless named):
#   ioctl_channel.c:1306-1319 fewer than 2 entries (usermode) or 4 (kernel-mode submit); :1321-1325 not a power of two;
#   :1331-1336 more than U32_MAX / 8 entries;
#   channel.c:1416-1422 not bound to an AS; :1424-1431 not bound to a TSG; :1433-1438 usermode buffers already set up (EEXIST),
#   :1440-1446 a kernel-mode GPFIFO already allocated (EEXIST); :1448-1459 DETERMINISTIC with the watchdog on; :1461-1473 USERMODE
#   without DETERMINISTIC (CONFIG_NVGPU_IOCTL_NON_FUSA: Makefile.shared.configs @1f9fbc85fedecf8e2541fa094e12299c88bc51ef
#   adds -DCONFIG_NVGPU_IOCTL_NON_FUSA in the regular, non-safety profile; line not counted);
#   linux-channel.c:523-525 a dma-buf fd of 0; :527-531 a non-zero dma-buf offset; :533-537 the GPFIFO fd is no dma-buf
#   (dma_buf_get's errno, linux-channel.c:450-453); :539-546 GPFIFO dma-buf smaller than max(4 KiB, entries * 8); :557-560 the
#   USERD fd is no dma-buf. The kernel checks no USERD size. linux-channel.c:548-550 maps the GPFIFO into the channel's VM.
SETUP_BIND_MIN_ENTRIES_USERMODE, SETUP_BIND_MIN_ENTRIES_KERNEL = 2, 4   # ioctl_channel.c:1308 / :1314
GPFIFO_ENTRY_SIZE, GPFIFO_MIN_BYTES = 8, 0x1000   # linux-channel.c:539-541 max_t(u32, SZ_4K, entries * gpfifo entry size)
# ALLOC_OBJ_CTX (ioctl_channel.c:1277-1279 -> gr_setup.c:159 nvgpu_gr_setup_alloc_obj_ctx): :127-131 not bound to an AS -> EINVAL;
# :134-137 a class ga10b does not have -> EINVAL; :193-195 not bound to a TSG -> EINVAL. It does not need SETUP_BIND first.
# SET_ERROR_NOTIFIER (ioctl_channel.c:359-408): :367-370 mem 0 -> EINVAL; :372-379 not a dma-buf -> EINVAL; :364, :381-385
# offset + sizeof(struct nvgpu_notification) past the dma-buf -> EINVAL. The size field is not read.
NOTIFICATION_SIZE = 16                        # struct nvgpu_notification (nvgpu.h:1175): u32 time_stamp[2], u32 info32, u16, u16
NVMAP_HEAP_IOVMM, NVMAP_HEAP_CARVEOUT_GENERIC = 1 << 30, 1 << 0   # linux/nvmap.h:28 NVMAP_HEAP_IOVMM, :37 NVMAP_HEAP_CARVEOUT_GENERIC
NVMAP_HEAP_SYSMEM = 1 << 31                   # not in either r36 nvmap header (uapi nvmap.h, linux/nvmap.h): value and the ENOMEM
                                              # it answers on Orin from FACTS:39 (nvmap_dev.c:628-: a carveout heap that is not
                                              # present is no memory)
NVMAP_HANDLE_CACHE_FLAG = 0x3                 # linux/nvmap.h:46 NVMAP_HANDLE_CACHE_FLAG; :42-:45 UNCACHEABLE .. CACHEABLE are 0..3.
                                              # nvmap_ioctl.c:218-220 hands the flags (less KIND_SPECIFIED) to nvmap_alloc_handle(),
                                              # which keeps flags & NVMAP_HANDLE_CACHE_FLAG as the cache mode: no refusal
# nvmap: nvmap_ioctl.c:296-297 / :346-347 CREATE of size 0 fails with nvmap_create_handle()'s EINVAL (nvmap_handle.c, "if
# (!size) return ERR_PTR(-EINVAL)"); ALLOC: :199-200 align not a power of two -> EINVAL (raised to a page at :216), :202-203 handle
# 0 -> EINVAL, :205-207 unknown handle -> EINVAL, :209-212 no memory in the heap mask -> ENOMEM (nvmap_dev.c:600-601 an empty
# mask, :613-625 IOVMM has memory up to the RAM size, :628- a carveout only if present), nvmap_alloc.c nvmap_alloc_handle() "if
# (h->alloc) return -EEXIST"; GET_FD: :170-172 a handle that is no nvmap handle goes to dma_buf_get() (EBADF for a bad number);
# FREE: :585-586 handle 0 -> 0, :588-597 an unknown handle is a no-op returning 0.
NVMAP_MMAP_ERRNO = "EPERM"                    # nvmap_dev.c:336-343 nvmap_map(): "mmap not supported on nvmap file", -EPERM
PAGE = 0x1000

# ---- mmap ----
# ctrl fd (ioctl_ctrl.c:2651 gk20a_ctrl_dev_mmap): :2661-2662 a second usermode mapping -> EBUSY; :2664-2665 more than 64 KiB ->
# EINVAL (smaller is accepted); :2667-2668 a non-zero offset -> EINVAL. AS, TSG and channel fds have no .mmap: mm/mmap.c
# do_mmap() answers ENODEV. A dma-buf mapping past the buffer -> EINVAL (dma-buf.c dma_buf_mmap_internal(), "check for
# overflowing the buffer's size").

# ---- usermode submit, from the ga10b hardware headers (OE4T drivers/gpu/nvgpu/include/nvgpu/hw/ga10b/) ----
USERD_GP_GET_OFFSET = 34 * 4                  # hw_ram_ga10b.h:147 ram_userd_gp_get_w() = 34 (words); clc56f.h:62 GPGet 0088
USERD_GP_PUT_OFFSET = 35 * 4                  # hw_ram_ga10b.h:148 ram_userd_gp_put_w() = 35; clc56f.h:63 GPPut 008c; FACTS:49
USERMODE_BASE, USERMODE_SIZE = 0x30000, 0x10000   # hw_func_ga10b.h:64 func_cfg0_r() = 0x30000 (the usermode page); 64 KiB from FACTS:48
                                                  # and ioctl_ctrl.c:2664 (SZ_64K, the largest mapping)
DOORBELL_OFFSET = 0x30090 - USERMODE_BASE     # hw_func_ga10b.h:63 func_doorbell_r() = 0x00030090, so 0x90 into the page (FACTS:49)
USERD_SIZE = 0x1000                           # FACTS:31 (step 10, 4 KiB USERD); the kernel checks no USERD size (STRICTER_THAN_KERNEL)
MAX_RING_BYTES = 64 << 10                     # FACTS:54 pitfall 1 (an 8 KiB ring worked, 3 MiB froze): STRICTER_THAN_KERNEL
# GPFIFO entry: clc56f.h:272 NVC56F_GP_ENTRY0_GET (address[31:2]), :274 NVC56F_GP_ENTRY1_GET_HI (bits 39:32 of the address in
# entry bits 32..), :275 NVC56F_GP_ENTRY1_LEVEL (bit 41, :277 SUBROUTINE), :278 NVC56F_GP_ENTRY1_LENGTH (bits 62:42, in dwords).
GP_ENTRY_LENGTH_SHIFT, GP_ENTRY_LENGTH_MASK = 42, 0x1fffff

# ---- struct nvgpu_notification (nvgpu.h:1175): u32 time_stamp[2], u32 info32 (:1179), u16 info16, u16 status (:1192) ----
NOTIFICATION_INFO32, NOTIFICATION_STATUS = 8, 14
NOTIFICATION_STATUS_ERROR = 0xffff            # linux-channel.c:147 info32 = error, :149 status = 0xffff (nvgpu_set_err_notifier_locked)
CHANNEL_FIFO_ERROR_MMU_ERR_FLT = 31           # nvgpu.h:1186 NVGPU_CHANNEL_FIFO_ERROR_MMU_ERR_FLT
CHANNEL_GR_EXCEPTION = 13                     # nvgpu.h:1183 NVGPU_CHANNEL_GR_EXCEPTION

# ---- host methods (clc56f.h, byte offsets of the method; GPFIFO_B 0xC76F uses the same host methods, no clc76f.h is stored) ----
HOST_SET_OBJECT, HOST_NON_STALL_INTR = 0x0, 0x20   # clc56f.h:69 NVC56F_SET_OBJECT, :111 NVC56F_NON_STALL_INTERRUPT
# Host methods run from 0x00 (clc56f.h:69 SET_OBJECT) to 0xa0 (:264 NVC56F_QUADRO_VERIFY); the engine methods the fake takes
# start at 0x240 (clc7b5.h:47) and 0x2b4 (clc7c0.h:441). The fake splits at 0x100 (any split in between decodes the same).
HOST_METHOD_LIMIT = 0x100
# clc56f.h:207 NVC56F_SEM_ADDR_LO, :209 _ADDR_HI, :211 _PAYLOAD_LO, :213 _PAYLOAD_HI, :215 NVC56F_SEM_EXECUTE
HOST_SEM_ADDR_LO, HOST_SEM_ADDR_HI, HOST_SEM_PAYLOAD_LO, HOST_SEM_PAYLOAD_HI, HOST_SEM_EXECUTE = 0x5c, 0x60, 0x64, 0x68, 0x6c
SEM_ADDR_LO_ALIGN, SEM_ADDR_HI_MASK = 4, 0xff  # clc56f.h:208 SEM_ADDR_LO_OFFSET 31:2, :210 SEM_ADDR_HI_OFFSET 7:0 (a 40-bit address)
SEM_OP_RELEASE, SEM_OP_ACQ_CIRC_GEQ, SEM_OP_ACQ_AND, SEM_OP_ACQ_NOR = 1, 3, 4, 5   # clc56f.h:218 / :220 / :221 / :222 _OPERATION_*
SEM_EXECUTE_OPERATION_MASK = 0x7              # clc56f.h:216 NVC56F_SEM_EXECUTE_OPERATION 2:0
SEM_EXECUTE_PAYLOAD_SIZE_BIT, SEM_EXECUTE_RELEASE_TIMESTAMP_BIT = 24, 25   # clc56f.h:230 _PAYLOAD_SIZE 24:24, :233 _RELEASE_TIMESTAMP 25:25
SEM_TIMESTAMP_OFFSET = 8                      # the release timestamp follows the 8-byte payload: TG hcq.py:256 timestamp_addr =
                                              # value_addr + 8 (tinygrad reads it there)
# the pushbuffer method header, as tinygrad writes it: TG ops_nv.py:86 nvm() = (2 << 28) | (count << 16) | (subchannel << 13) |
# (method >> 2), i.e. opcode 1 in bits 31:29, and its largest method (0x1698, INVALIDATE_SHADER_CACHES_NO_WFI) fits 11:0
PB_OPCODE_SHIFT, PB_OPCODE_INC_METHOD = 29, 1  # clc56f.h:315 NVC56F_DMA_INCR_OPCODE 31:29, :316 _OPCODE_VALUE 1 (:304 SEC_OP_INC_METHOD)
PB_COUNT_SHIFT, PB_COUNT_MASK = 16, 0x1fff     # clc56f.h:314 NVC56F_DMA_INCR_COUNT 28:16
PB_SUBCHANNEL_SHIFT, PB_SUBCHANNEL_MASK = 13, 0x7   # clc56f.h:313 NVC56F_DMA_INCR_SUBCHANNEL 15:13
PB_ADDRESS_MASK = 0xfff                       # clc56f.h:312 NVC56F_DMA_INCR_ADDRESS 11:0 (method offset in dwords)
PB_NOP = 0x0                                  # clc56f.h:333 NVC56F_DMA_NOP (0x00000000)
# copy engine (clc7b5.h): :84 NVC7B5_LAUNCH_DMA, :47 SET_SEMAPHORE_A, :49 _B, :51 SET_SEMAPHORE_PAYLOAD
DMA_LAUNCH, DMA_SEM_ADDR_HI, DMA_SEM_ADDR_LO, DMA_SEM_PAYLOAD = 0x300, 0x240, 0x244, 0x248
# clc7b5.h:161 NVC7B5_OFFSET_IN_UPPER, :163 _IN_LOWER, :165 OFFSET_OUT_UPPER, :167 _OUT_LOWER, :173 LINE_LENGTH_IN
DMA_OFFSET_IN_HI, DMA_OFFSET_IN_LO, DMA_OFFSET_OUT_HI, DMA_OFFSET_OUT_LO, DMA_LINE_LENGTH_IN = 0x400, 0x404, 0x408, 0x40c, 0x418
DMA_LAUNCH_TRANSFER_MASK, DMA_LAUNCH_TRANSFER_NON_PIPELINED = 0x3, 2   # clc7b5.h:85 LAUNCH_DMA_DATA_TRANSFER_TYPE 1:0, :88 _NON_PIPELINED 2
DMA_LAUNCH_SEMAPHORE_SHIFT, DMA_LAUNCH_SEMAPHORE_MASK = 3, 0x3   # clc7b5.h:95 LAUNCH_DMA_SEMAPHORE_TYPE 4:3
DMA_LAUNCH_SEMAPHORE_ONE_WORD, DMA_LAUNCH_SEMAPHORE_FOUR_WORD = 1, 2   # clc7b5.h:99 RELEASE_ONE_WORD_SEMAPHORE, :100 RELEASE_FOUR_WORD_SEMAPHORE
# the four-word release writes the payload and, 8 bytes on, the timestamp (TG hcq.py:256; tinygrad asks for it, ops_nv.py:209)
# compute (clc7c0.h): :441 NVC7C0_SEND_PCAS_A (QMD address >> 8, :442); :456 NVC7C0_SEND_SIGNALING_PCAS2_B launches it
COMPUTE_SEND_PCAS_A, COMPUTE_SEND_SIGNALING_PCAS2_B = 0x2b4, 0x2c0
QMD_ADDRESS_SHIFT = 8                         # clc7c0.h:442 SEND_PCAS_A_QMD_ADDRESS_SHIFTED8 31:0; tinygrad shifts the launch address
                                              # and DEPENDENT_QMD0_POINTER alike (TG ops_nv.py:151, :154)
QMD_MAJOR_VERSION = 3                         # TG ops_nv.py:299 writes QMD V03 (qmd_major_version 3) for Ampere
QMD_SIZE = 0x100                              # QMD V03_00 is 2048 bits: TG nv_570.py:14398-:14673 NVC6C0_QMDV03_00_* (:14673
                                              # DEBUG_ID_LOWER = bits 2047:2016); :14516 QMD_MAJOR_VERSION, 3 in TG ops_nv.py:299
MAX_THREADS_PER_BLOCK = 1024                  # no stored source (CUDA's documented block limit): STRICTER_THAN_KERNEL
QMD_CHAIN_LIMIT = 4096                        # a guard against a looping dependent-QMD chain: STRICTER_THAN_KERNEL
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
                                                 "ALLOC_OBJ_CTX; the kernel checks only the minimum size (linux-channel.c:539-546)",
  "USERD dma-buf smaller than 4 KiB refused with EINVAL": "the kernel checks no USERD size (linux-channel.c:557-560); the fake reads "
                                                         "GP_GET/GP_PUT there and FACTS:31 gives the working size",
  "only FIXED_OFFSET reservations, only 4 KiB map page size, no FIXED_OFFSET maps": "not emulated beyond what the backend uses (the "
                                                                                   "kernel accepts more)",
  "OPEN_CHANNEL runlist_id other than -1 refused with EINVAL": "the fake has only the GR runlist; the kernel accepts an id that names "
                                                              "one of the GPU instance's runlists (ioctl_channel.c:503-507)",
  "ALLOC_OBJ_CTX accepts only the compute and DMA-copy classes": "the kernel also accepts ga10b's other valid classes (gr_setup.c:134); "
                                                                 "the fake emulates only these two",
  "NVMAP_IOC_ALLOC heaps other than IOVMM answer ENOMEM": "the fake has no carveout heap; the kernel allocates from one that is present "
                                                          "(nvmap_dev.c:628-)",
  "NVMAP_IOC_GET_FD of an unallocated handle refused with EINVAL": "the kernel hands out the fd (nvmap_ioctl.c:159-164); the fake's "
                                                                   "dma-buf is the handle's memory, which exists only after ALLOC",
  "map flag IO_COHERENT (1 << 4) refused with EINVAL": "vm.c:61-64 accepts it (deprecated, nvgpu-as.h:147); the backend never sets it",
  "ioctl argument smaller than _IOC_SIZE refused with EFAULT": "the kernel copies _IOC_SIZE bytes and cannot tell; the fake refuses "
                                                               "so as not to overrun this process",
  "QMD with more than 1024 threads per block faults": "no stored source; CUDA's block limit, so an oversized launch fails in the fake "
                                                      "as it would on the GPU",
  "QMD asking for more than 100 KiB of shared memory faults": "no stored source (K.MAX_SHARED_MEMORY); conservative for ga10b",
  "QMD whose major version is not 3 faults": "the fake decodes only V03 (TG ops_nv.py:299 writes it for Ampere)",
  "dependent-QMD chain longer than 4096 faults": "a guard against a looping chain (our own bug); the GPU would follow it",
  "AS va_range_end above 2^40 refused with ENOMEM": "the kernel allows up to DEFAULT_APERTURE_SIZE - CHANNEL_KERNEL_SIZE (ga10b's "
                                                    "MMU is 49-bit); the fake models the 40-bit VA it reports (ioctl_ctrl.c:506) and "
                                                    "that GPFIFO entries and semaphores address (clc56f.h:208/210)",
  "UNMAP_BUFFER of an offset that is not mapped refused with EINVAL": "the kernel returns 0 (ioctl_as.c:136-138); the fake "
                                                                     "refuses it as a guard against the backend losing track "
                                                                     "of its mappings (a double or a stray unmap)",
  "munmap of an address the fake did not map, or with another size, refused with EINVAL": "Linux munmap() succeeds on an unmapped "
      "page-aligned range and unmaps part of a mapping (mm/mmap.c do_munmap); the fake refuses both as a guard against the backend "
      "unmapping the wrong pointer or size",
  "64-bit semaphore payload at an address not 8-byte aligned faults": "the header only requires 4 (clc56f.h:208); a guard",
}
