"""The fake nvgpu/nvmap driver refuses what the real one (or the hardware) refuses. Each test takes the known-good
bring-up sequence, breaks one rule, and expects the errno the kernel would return. Without these the device tests
would prove only that the backend agrees with a permissive fake."""
import ctypes, errno
import pytest
from backend import uapi as U
from backend.testing.fake_driver import FakeTegra, CTRL_PATH, NVMAP_PATH, MAX_RING_BYTES

class Bringup:
  """The documented sequence, one step per method, so a test can stop or deviate anywhere."""
  def __init__(self):
    self.fk = FakeTegra(thread=False)
    self.ctrl, self.nvmap = self.fk.open(CTRL_PATH), self.fk.open(NVMAP_PATH)

  def alloc_as(self, start=2 << 20, end=(1 << 40) - (2 << 20)):
    a = U.nvgpu_alloc_as_args(flags=U.NVGPU_GPU_IOCTL_ALLOC_AS_FLAGS_UNIFIED_VA, va_range_start=start, va_range_end=end)
    self.fk.ioctl(self.ctrl, U.NVGPU_GPU_IOCTL_ALLOC_AS, a)
    self.as_fd = a.as_fd
    return self

  def tsg(self):
    self.fk.ioctl(self.ctrl, U.NVGPU_GPU_IOCTL_OPEN_TSG, t:=U.nvgpu_gpu_open_tsg_args())
    self.tsg_fd = t.tsg_fd
    self.fk.ioctl(self.tsg_fd, U.NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT, s:=U.nvgpu_tsg_create_subcontext_args(type=1, as_fd=self.as_fd))
    self.veid = s.veid
    self.fk.ioctl(self.ctrl, U.NVGPU_GPU_IOCTL_OPEN_CHANNEL, c:=U.nvgpu_channel_open_args(runlist_id=-1))
    self.ch = c.channel_fd
    return self

  def bind_as(self):
    self.fk.ioctl(self.as_fd, U.NVGPU_AS_IOCTL_BIND_CHANNEL, U.nvgpu_as_bind_channel_args(channel_fd=self.ch))
    return self
  def bind_tsg(self):
    self.fk.ioctl(self.tsg_fd, U.NVGPU_TSG_IOCTL_BIND_CHANNEL_EX, U.nvgpu_tsg_bind_channel_ex_args(channel_fd=self.ch, subcontext_id=self.veid))
    return self
  def wdt_off(self):
    self.fk.ioctl(self.ch, U.NVGPU_IOCTL_CHANNEL_WDT, U.nvgpu_channel_wdt_args(wdt_status=1))
    return self

  def buf(self, size, heap=U.NVMAP_HEAP_IOVMM, align=0x1000):
    self.fk.ioctl(self.nvmap, U.NVMAP_IOC_CREATE, c:=U.nvmap_create_handle(size=size))
    self.fk.ioctl(self.nvmap, U.NVMAP_IOC_ALLOC, U.nvmap_alloc_handle(handle=c.handle, heap_mask=heap, flags=(0x900 << 16) | 1, align=align))
    self.fk.ioctl(self.nvmap, U.NVMAP_IOC_GET_FD, g:=U.nvmap_create_handle(handle=c.handle))
    return c.handle, g.size

  def map(self, fd, **kw):
    a = U.nvgpu_as_map_buffer_ex_args(**{"compr_kind": -1, "incompr_kind": 0, "dmabuf_fd": fd, "page_size": 0x1000, **kw})
    self.fk.ioctl(self.as_fd, U.NVGPU_AS_IOCTL_MAP_BUFFER_EX, a)
    return a.offset

  def setup_bind(self, entries=1024, ring_bytes=None, **kw):
    _, ring = self.buf(ring_bytes or entries * 8)
    _, userd = self.buf(0x1000)
    args = dict(num_gpfifo_entries=entries, flags=0xA, userd_dmabuf_fd=userd, gpfifo_dmabuf_fd=ring)
    self.fk.ioctl(self.ch, U.NVGPU_IOCTL_CHANNEL_SETUP_BIND, sb:=U.nvgpu_channel_setup_bind_args(**{**args, **kw}))
    return sb

def refused(code, fn, *a, **kw):
  with pytest.raises(OSError) as e: fn(*a, **kw)
  assert e.value.errno == code, e.value
  return e.value

def good(): return Bringup().alloc_as().tsg().bind_as().bind_tsg().wdt_off()

def test_good_sequence_is_accepted_and_returns_a_token():
  b = good()
  assert b.setup_bind().work_submit_token != 0
  b.fk.ioctl(b.ch, U.NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX, U.nvgpu_alloc_obj_ctx_args(class_num=0xC7C0))

def test_unknown_ioctl_number():
  b = Bringup()
  refused(errno.ENOTTY, b.fk.ioctl, b.ctrl, U.NVGPU_GPU_IOCTL_ALLOC_AS + 1, U.nvgpu_alloc_as_args())

def test_struct_smaller_than_the_number_is_refused():
  b = Bringup()   # the kernel would copy 64 bytes from a 24-byte struct; the fake refuses instead of overrunning it
  refused(errno.EFAULT, b.fk.ioctl, b.ctrl, U.NVGPU_GPU_IOCTL_ALLOC_AS, U.nvgpu_gpu_open_tsg_args())

def test_ioctl_on_the_wrong_fd_kind():
  b = Bringup()
  refused(errno.ENOTTY, b.fk.ioctl, b.nvmap, U.NVGPU_GPU_IOCTL_ALLOC_AS, U.nvgpu_alloc_as_args(va_range_start=2 << 20, va_range_end=1 << 39))

@pytest.mark.parametrize("start,end", [(0, 1 << 39), (2 << 20, 0), (0x1000, 1 << 39), (2 << 20, (1 << 39) + 0x1000), (4 << 20, 2 << 20)])
def test_as_bounds_nonzero_2mib_aligned_and_ordered(start, end):
  refused(errno.EINVAL, Bringup().alloc_as, start, end)

# as.c:133-140: a VM nvgpu_vm_init() cannot make is ENOMEM -- past the 49-bit aperture less the kernel's 4 GiB (the kernel's
# rule), or past 2^40 (the fake's VA, kept as STRICTER_THAN_KERNEL)
@pytest.mark.parametrize("end", [1 << 49, 1 << 41])
def test_as_end_past_the_va_is_enomem(end):
  refused(errno.ENOMEM, Bringup().alloc_as, 2 << 20, end)

def test_alloc_space_must_not_overlap_or_leave_the_as():
  b = Bringup().alloc_as()
  def space(off, pages):
    b.fk.ioctl(b.as_fd, U.NVGPU_AS_IOCTL_ALLOC_SPACE, U.nvgpu_as_alloc_space_args(pages=pages, page_size=0x1000, flags=1, offset=off))
  space(0xFE00000000, 1 << 18)
  # vm_area.c:141-154: a FIXED_OFFSET range the VM allocator cannot give is ENOMEM (:104-130 keep EINVAL for the page size)
  refused(errno.ENOMEM, space, 0xFE00100000, 16)            # inside the first reservation
  refused(errno.ENOMEM, space, 1 << 40, 16)                 # beyond 40 bits
  refused(errno.ENOMEM, space, 0xFD00000800, 16)            # misaligned
  refused(errno.EINVAL, b.fk.ioctl, b.as_fd, U.NVGPU_AS_IOCTL_ALLOC_SPACE,
          U.nvgpu_as_alloc_space_args(pages=16, page_size=0x2000, flags=1, offset=0xFD00000000))   # not one of the VM's page sizes

def test_top_down_mapping_skips_reservations():
  b = Bringup().alloc_as()
  top = (1 << 40) - (2 << 20)
  b.fk.ioctl(b.as_fd, U.NVGPU_AS_IOCTL_ALLOC_SPACE,
             U.nvgpu_as_alloc_space_args(pages=(top - 0xFE00000000) >> 12, page_size=0x1000, flags=1, offset=0xFE00000000))
  _, fd = b.buf(3 << 20)
  va = b.map(fd)
  assert va + (3 << 20) <= 0xFE00000000, hex(va)           # highest free range below the reservation
  _, fd2 = b.buf(0x1000)
  assert b.map(fd2) < va                                   # next one lower still

def test_tsg_bind_requires_as_bind_first():
  b = Bringup().alloc_as().tsg()
  refused(errno.EINVAL, b.bind_tsg)

def test_setup_bind_requires_watchdog_disabled():
  b = Bringup().alloc_as().tsg().bind_as().bind_tsg()
  refused(errno.EINVAL, b.setup_bind)

@pytest.mark.parametrize("kw", [{"userd_dmabuf_offset": 0x100}, {"gpfifo_dmabuf_offset": 0x1000}])
def test_setup_bind_nonzero_offsets(kw):
  refused(errno.EINVAL, good().setup_bind, **kw)

def test_setup_bind_drops_unknown_flags():   # ioctl_channel.c:616-633 translates bits 0-3 only; the rest are ignored
  assert good().setup_bind(flags=0xA | 0x100).work_submit_token != 0

def test_setup_bind_usermode_needs_deterministic_and_only_usermode_gets_a_token():
  b = Bringup().alloc_as().tsg().bind_as().bind_tsg()   # watchdog still on
  refused(errno.EINVAL, b.setup_bind, flags=0x8)           # channel.c:1461-1473: usermode without DETERMINISTIC (non-FuSa build)
  assert good().setup_bind(flags=0x2).work_submit_token == 0

@pytest.mark.parametrize("entries", [1000, 3, 1])
def test_setup_bind_power_of_two_entries(entries):
  refused(errno.EINVAL, good().setup_bind, entries=entries, ring_bytes=8192)

def test_setup_bind_ring_at_least_entries_times_8():
  refused(errno.EINVAL, good().setup_bind, entries=2048, ring_bytes=8192)

def test_setup_bind_hard_refuses_a_ring_that_froze_an_orin():
  e = refused(errno.EFBIG, good().setup_bind, entries=0x10000)   # tinygrad's desktop default: 512 KiB
  assert "froze" in str(e)
  assert 0x10000 * 8 > MAX_RING_BYTES

def test_alloc_obj_ctx_needs_an_as_and_a_ga10b_class():   # gr_setup.c:127-131, :134-137; SETUP_BIND is not needed first
  b = Bringup().alloc_as().tsg()
  refused(errno.EINVAL, b.fk.ioctl, b.ch, U.NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX, U.nvgpu_alloc_obj_ctx_args(class_num=0xC7C0))
  b.bind_as().bind_tsg()
  refused(errno.EINVAL, b.fk.ioctl, b.ch, U.NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX, U.nvgpu_alloc_obj_ctx_args(class_num=0xC9C0))  # Ada compute
  b.fk.ioctl(b.ch, U.NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX, U.nvgpu_alloc_obj_ctx_args(class_num=0xC7C0))

def test_veids_sync_is_0_async_from_1():   # tsg.c@675edd50:237-280 (nvgpu.h:171: VEID 0 is the SYNC subcontext)
  b = Bringup().alloc_as().tsg()
  assert b.veid == 1                                        # the first ASYNC subcontext
  def sub(t):
    b.fk.ioctl(b.tsg_fd, U.NVGPU_TSG_IOCTL_CREATE_SUBCONTEXT, s:=U.nvgpu_tsg_create_subcontext_args(type=t, as_fd=b.as_fd))
    return s.veid
  assert sub(1) == 2 and sub(0) == 0
  assert [sub(1) for _ in range(61)][-1] == 63              # ASYNC VEIDs run out at 63 (64 subcontexts)
  refused(errno.ENOSPC, sub, 1)                             # ...and then fall back to the SYNC one, which is taken

def test_bind_channel_ex_to_veid_0_makes_the_sync_subcontext():   # tsg.c:375-384
  b = Bringup().alloc_as().tsg().bind_as()
  b.veid = 0
  assert b.bind_tsg().wdt_off().setup_bind().work_submit_token != 0

def test_as_bind_once_and_setup_bind_once():
  b = good()
  refused(errno.EINVAL, b.bind_as)                          # ioctl_as.c:67-70 already bound
  b.setup_bind()
  refused(errno.EEXIST, b.setup_bind)                       # channel.c:1433-1438 usermode buffers already set up

@pytest.mark.parametrize("flags", [3 << 10, 1 << 12, 1 << 8])
def test_map_refuses_access_3_tegra_raw_and_unknown_bits(flags):   # vm.c:109-111 / :424-428 / :93-95
  b = Bringup().alloc_as()
  _, fd = b.buf(0x1000)
  refused(errno.EINVAL, b.map, fd, flags=flags)

def test_open_channel_primary_runlist_only():
  b = Bringup()
  refused(errno.EINVAL, b.fk.ioctl, b.ctrl, U.NVGPU_GPU_IOCTL_OPEN_CHANNEL, U.nvgpu_channel_open_args(runlist_id=0))

def test_one_doorbell_mapping_per_ctrl_fd():
  b = Bringup()
  addr = b.fk.mmap(b.ctrl, U.USERMODE_PAGE_SIZE, 0)
  refused(errno.EBUSY, b.fk.mmap, b.ctrl, U.USERMODE_PAGE_SIZE, 0)
  b.fk.munmap(addr, U.USERMODE_PAGE_SIZE)
  b.fk.munmap(b.fk.mmap(b.ctrl, U.USERMODE_PAGE_SIZE, 0), U.USERMODE_PAGE_SIZE)   # free again after munmap

def test_mmap_the_dmabuf_not_the_nvmap_fd():
  b = Bringup()
  refused(errno.EPERM, b.fk.mmap, b.nvmap, 0x1000, 0)   # nvmap_dev.c:336-343: the /dev/nvmap fd itself cannot be mapped

def test_free_while_mapped_keeps_the_pages_until_the_last_reference():
  b = Bringup().alloc_as()
  h, fd = b.buf(0x1000)
  va = b.map(fd)
  b.fk.ioctl(b.nvmap, U.NVMAP_IOC_FREE, h)   # nvmap drops the handle; the dma-buf and the GPU mapping keep the memory
  assert b.fk.live()["handles"] == 0 and b.fk._used == 0x1000
  b.fk.ioctl(b.as_fd, U.NVGPU_AS_IOCTL_UNMAP_BUFFER, U.nvgpu_as_unmap_buffer_args(offset=va))
  b.fk.close(fd)
  assert b.fk._used == 0

def test_regular_map_with_an_address_is_refused():
  b = Bringup().alloc_as()
  _, fd = b.buf(0x1000)
  refused(errno.EINVAL, b.map, fd, offset=0x100000000)   # vm.c nvgpu_vm_map_buffer: no input address without FIXED_OFFSET

def test_sysmem_heap_answers_enomem_and_align_must_be_power_of_two():
  b = Bringup()
  refused(errno.ENOMEM, b.buf, 0x1000, heap=U.NVMAP_HEAP_CARVEOUT_GENERIC_SYSMEM)
  refused(errno.EINVAL, b.buf, 0x1000, align=0x3000)
  b.buf(0x1000, align=0x800)   # below a page nvmap rounds the alignment up

@pytest.mark.parametrize("kw", [{"page_size": 0}, {"buffer_offset": 0x1000}, {"mapping_size": 0x1000}, {"compr_kind": -1, "incompr_kind": -1}])
def test_map_buffer_ex_arguments(kw):
  b = Bringup().alloc_as()
  _, fd = b.buf(0x2000)
  refused(errno.EINVAL, b.map, fd, **kw)

def test_memory_limit_gives_enomem():
  b = Bringup()
  b.fk.memory_limit = 1 << 20
  refused(errno.ENOMEM, b.buf, 2 << 20)

def test_command_processor_faults_on_unmapped_pushbuffer_and_writes_the_notifier():
  b = good()
  sb = b.setup_bind()
  b.fk.ioctl(b.ch, U.NVGPU_IOCTL_CHANNEL_ALLOC_OBJ_CTX, U.nvgpu_alloc_obj_ctx_args(class_num=0xC7B5))
  _, nfd = b.buf(0x1000)
  b.fk.ioctl(b.ch, U.NVGPU_IOCTL_CHANNEL_SET_ERROR_NOTIFIER, U.nvgpu_set_error_notifier(size=0x1000, mem=nfd))
  ch = b.fk.channels[sb.work_submit_token]
  ctypes.c_uint64.from_address(ch.ring.phys).value = (0x1234000 >> 2 << 2) | (4 << 42) | (1 << 41)   # nothing mapped there
  b.fk.store_barrier()   # the entry reaches memory before GP_PUT does
  ctypes.c_uint32.from_address(ch.userd.phys + U.USERD_GP_PUT_OFFSET).value = 1
  db = b.fk.mmap(b.ctrl, U.USERMODE_PAGE_SIZE, 0)
  b.fk.doorbell(db, U.USERMODE_DOORBELL_OFFSET, sb.work_submit_token)
  assert ch.error is not None and "unmapped GPU VA 0x1234000" in ch.error
  notifier = b.fk.mmap(nfd, 0x1000, 0)
  assert ctypes.c_uint16.from_address(notifier + 14).value != 0

def test_doorbell_with_unknown_token_is_a_fault():
  from backend.testing.fake_driver import GPUFault
  b = Bringup()
  db = b.fk.mmap(b.ctrl, U.USERMODE_PAGE_SIZE, 0)
  with pytest.raises(GPUFault): b.fk.doorbell(db, U.USERMODE_DOORBELL_OFFSET, 0xdead)

def test_live_counters_return_to_zero():
  b = Bringup().alloc_as()
  h, fd = b.buf(0x1000)
  cpu = b.fk.mmap(fd, 0x1000, 0)
  va = b.map(fd)
  assert b.fk.live() == {"handles": 1, "cpu_mappings": 1, "fds": 4, "gpu_mappings": 1}
  b.fk.ioctl(b.as_fd, U.NVGPU_AS_IOCTL_UNMAP_BUFFER, U.nvgpu_as_unmap_buffer_args(offset=va))
  b.fk.munmap(cpu, 0x1000)
  b.fk.close(fd)
  b.fk.ioctl(b.nvmap, U.NVMAP_IOC_FREE, h)
  for fd in (b.as_fd, b.nvmap, b.ctrl): b.fk.close(fd)
  assert b.fk.live() == {"handles": 0, "cpu_mappings": 0, "fds": 0, "gpu_mappings": 0}

def test_a_release_is_recorded_before_its_value_is_visible():
  # A CPU that waits on a signal may read fake.releases the moment the value lands, while the command-processor thread
  # that released it is still running: the record must already be there (a 1000-replay test once saw one entry short).
  from types import SimpleNamespace
  from backend.testing import kernel_facts as K
  fk = FakeTegra(thread=False)
  recorded_at_write = []
  fk.gpu_write = lambda as_, va, data: recorded_at_write.append(any(a == va for a, _ in fk.releases))
  ch = SimpleNamespace(as_=None, sem={K.HOST_SEM_ADDR_LO: 0x1000, K.HOST_SEM_ADDR_HI: 0, K.HOST_SEM_PAYLOAD_LO: 7, K.HOST_SEM_PAYLOAD_HI: 0},
                       copy={K.DMA_SEM_ADDR_LO: 0x2000, K.DMA_SEM_ADDR_HI: 0, K.DMA_SEM_PAYLOAD: 8})
  fk._host_semaphore(ch, K.SEM_OP_RELEASE | (1 << K.SEM_EXECUTE_PAYLOAD_SIZE_BIT))
  for kind in (K.DMA_LAUNCH_SEMAPHORE_ONE_WORD, K.DMA_LAUNCH_SEMAPHORE_FOUR_WORD):
    fk._copy_method(ch, K.DMA_LAUNCH, kind << K.DMA_LAUNCH_SEMAPHORE_SHIFT)
  assert fk.releases == [(0x1000, 7), (0x2000, 8), (0x2000, 8)] and recorded_at_write == [True] * 3, (fk.releases, recorded_at_write)
