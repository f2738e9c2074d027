"""Every ioctl number and struct size the Tegra backend uses, checked against the facts sheet
(shared/docs/tegra-nvgpu-facts.md, numbers from compiling the L4T r36 UAPI headers)."""
import ctypes
import pytest
from backend import uapi as U

# name -> (number, struct size) as written in the facts sheet
FACTS = {
  "NVGPU_GPU_IOCTL_GET_CHARACTERISTICS": (0xC0104705, 16),
  "NVGPU_GPU_IOCTL_ALLOC_AS": (0xC0404708, 64),
  "NVGPU_AS_IOCTL_ALLOC_SPACE": (0xC0204106, 32),
  "NVGPU_GPU_IOCTL_OPEN_TSG": (0xC0184709, 24),
  "NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT": (0xC0105412, 16),
  "NVGPU_GPU_IOCTL_OPEN_CHANNEL": (0xC004470B, 4),
  "NVGPU_AS_IOCTL_BIND_CHANNEL": (0xC0044101, 4),
  "NVGPU_TSG_IOCTL_BIND_CHANNEL_EX": (0xC018540B, 24),
  "NVGPU_IOCTL_CHANNEL_WDT": (0x40084877, 8),
  "NVGPU_IOCTL_CHANNEL_SETUP_BIND": (0xC0684880, 104),
  "NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX": (0xC010486C, 16),
  "NVGPU_IOCTL_CHANNEL_SET_ERROR_NOTIFIER": (0xC018486F, 24),
  "NVMAP_IOC_CREATE": (0xC0084E00, 8),
  "NVMAP_IOC_ALLOC": (0x40144E03, 20),
  "NVMAP_IOC_GET_FD": (0xC0084E0F, 8),
  "NVGPU_AS_IOCTL_MAP_BUFFER_EX": (0xC0284107, 40),
  "NVGPU_AS_IOCTL_UNMAP_BUFFER": (0xC0084105, 8),
  "NVMAP_IOC_FREE": (0x4E04, 0),
}
STRUCTS = {"NVGPU_GPU_IOCTL_GET_CHARACTERISTICS": U.nvgpu_gpu_get_characteristics, "NVGPU_GPU_IOCTL_ALLOC_AS": U.nvgpu_alloc_as_args,
  "NVGPU_AS_IOCTL_ALLOC_SPACE": U.nvgpu_as_alloc_space_args, "NVGPU_GPU_IOCTL_OPEN_TSG": U.nvgpu_gpu_open_tsg_args,
  "NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT": U.nvgpu_tsg_create_subcontext_args, "NVGPU_GPU_IOCTL_OPEN_CHANNEL": U.nvgpu_channel_open_args,
  "NVGPU_AS_IOCTL_BIND_CHANNEL": U.nvgpu_as_bind_channel_args, "NVGPU_TSG_IOCTL_BIND_CHANNEL_EX": U.nvgpu_tsg_bind_channel_ex_args,
  "NVGPU_IOCTL_CHANNEL_WDT": U.nvgpu_channel_wdt_args, "NVGPU_IOCTL_CHANNEL_SETUP_BIND": U.nvgpu_channel_setup_bind_args,
  "NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX": U.nvgpu_alloc_obj_ctx_args, "NVGPU_IOCTL_CHANNEL_SET_ERROR_NOTIFIER": U.nvgpu_set_error_notifier,
  "NVMAP_IOC_CREATE": U.nvmap_create_handle, "NVMAP_IOC_ALLOC": U.nvmap_alloc_handle, "NVMAP_IOC_GET_FD": U.nvmap_create_handle,
  "NVGPU_AS_IOCTL_MAP_BUFFER_EX": U.nvgpu_as_map_buffer_ex_args, "NVGPU_AS_IOCTL_UNMAP_BUFFER": U.nvgpu_as_unmap_buffer_args}

def test_backend_uses_exactly_the_ioctls_in_the_facts_table():
  assert set(U.IOCTLS) == set(FACTS)

@pytest.mark.parametrize("name", sorted(FACTS))
def test_ioctl_number_matches_facts(name):
  assert U.IOCTLS[name] == FACTS[name][0], f"{name}: {U.IOCTLS[name]:#x} != {FACTS[name][0]:#x}"

@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct_size_matches_facts_and_number(name):
  size = ctypes.sizeof(STRUCTS[name])
  assert size == FACTS[name][1]
  assert (U.IOCTLS[name] >> 16) & 0x3fff == size   # the size encoded in the number is the one we pass

def test_field_offsets_from_facts():
  c = U.nvgpu_gpu_characteristics
  assert ctypes.sizeof(c) == 328
  for field, off in [("num_gpc", 12), ("num_tpc_per_gpc", 40), ("flags", 64), ("compute_class", 80), ("gpfifo_class", 84), ("dma_copy_class", 92),
                     ("sm_arch_sm_version", 100), ("sm_arch_warp_count", 108), ("gpu_va_bit_count", 122), ("max_gpfifo_entries", 308)]:
    assert getattr(c, field).offset == off, field
  assert U.nvgpu_channel_setup_bind_args.work_submit_token.offset == 20
  assert U.nvgpu_as_map_buffer_ex_args.offset.offset == 32
  assert (U.NVGPU_CHANNEL_SETUP_BIND_FLAGS_DETERMINISTIC | U.NVGPU_CHANNEL_SETUP_BIND_FLAGS_USERMODE_SUPPORT) == 0xA
  assert (U.NVMAP_HEAP_IOVMM, U.NVGPU_AS_MAP_BUFFER_FLAGS_CACHEABLE, U.NVGPU_GPU_IOCTL_ALLOC_AS_FLAGS_UNIFIED_VA) == (1 << 30, 1 << 2, 1 << 1)
  assert (U.USERD_GP_GET_OFFSET, U.USERD_GP_PUT_OFFSET, U.USERMODE_DOORBELL_OFFSET) == (0x88, 0x8C, 0x90)

def test_importing_backend_does_not_import_tinygrad():
  import subprocess, sys
  code = "import sys, backend, backend.uapi, backend.devio; assert not any(m.startswith('tinygrad') for m in sys.modules), 'tinygrad imported'"
  subprocess.run([sys.executable, "-c", code], check=True)
