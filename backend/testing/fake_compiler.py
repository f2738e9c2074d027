"""The compiler of the fake Orin: kernels rendered for tinygrad's Python emulator, packed in an ELF that tinygrad's NV
program loader accepts. Imports tinygrad (the fake driver imports this module only when a device opens).

The ELF has `.text.<kernel>` holding `fake_driver.program_blob(uops)` -- so the fake GPU finds the program at the QMD's
program address in GPU memory, as the hardware does -- and `.nv.info.<kernel>` with EIATTR_PARAM_CBANK, which tells the
loader that kernel parameters start at constant bank 0 offset 0x160 (kernel_facts.KERNEL_PARAM_OFFSET), as nvcc's do.
"""
import base64, ctypes, pickle, struct
from dataclasses import replace
from tinygrad.device import Compiler
from tinygrad.runtime.ops_python import PythonRenderer
from tinygrad.runtime.autogen import libc
from tinygrad.uop.ops import Ops
from backend.testing import kernel_facts as K
from backend.testing.fake_driver import program_blob

EIFMT_SVAL, EIATTR_PARAM_CBANK = 0x04, 0x0a

def fake_cubin(name:str, text:bytes, param_bytes:int) -> bytes:
  """Sections: .shstrtab, .text.<name> (the program), .nv.info.<name> (EIATTR_PARAM_CBANK: parameters at 0x160, their size)
  and .nv.constant0.<name> (constant bank 0: 0x160 bytes of driver parameters, then the kernel parameters)."""
  info = struct.pack("<BBHIHH", EIFMT_SVAL, EIATTR_PARAM_CBANK, 8, 0, K.KERNEL_PARAM_OFFSET, param_bytes)
  const0 = b"\0" * (K.KERNEL_PARAM_OFFSET + param_bytes)
  text = text + b"\0" * (-len(text) % 128)
  names = [".shstrtab", f".text.{name}", f".nv.info.{name}", f".nv.constant0.{name}"]
  shstr, name_at = b"\0", []
  for n in names: name_at, shstr = name_at + [len(shstr)], shstr + n.encode() + b"\0"
  eh, sh = ctypes.sizeof(libc.Elf64_Ehdr), ctypes.sizeof(libc.Elf64_Shdr)
  text_off, info_off = eh, eh + len(text)
  const_off = info_off + len(info)
  str_off = const_off + len(const0)
  sh_off = (str_off + len(shstr) + 7) & ~7
  hdr = libc.Elf64_Ehdr(e_type=2, e_machine=190, e_version=1, e_shoff=sh_off, e_ehsize=eh, e_shentsize=sh, e_shnum=5, e_shstrndx=1)
  hdr.e_ident[:7] = [0x7f, ord('E'), ord('L'), ord('F'), libc.ELFCLASS64, 1, 1]
  shdrs = [libc.Elf64_Shdr(), libc.Elf64_Shdr(sh_name=name_at[0], sh_type=3, sh_offset=str_off, sh_size=len(shstr), sh_addralign=1),
           libc.Elf64_Shdr(sh_name=name_at[1], sh_type=1, sh_flags=6, sh_offset=text_off, sh_size=len(text), sh_addralign=128),
           libc.Elf64_Shdr(sh_name=name_at[2], sh_type=0x70000000, sh_offset=info_off, sh_size=len(info), sh_addralign=4),
           libc.Elf64_Shdr(sh_name=name_at[3], sh_type=1, sh_flags=2, sh_offset=const_off, sh_size=len(const0), sh_addralign=4)]
  blob = bytearray(bytes(hdr) + text + info + const0 + shstr)
  blob += b"\0" * (sh_off - len(blob))
  for s in shdrs: blob += bytes(s)
  return bytes(blob)

class FakeOrinCompiler(Compiler):
  def __init__(self): super().__init__(None)   # no disk cache: these "binaries" only mean something to the fake GPU
  def compile(self, src:str) -> bytes:
    name, uops = pickle.loads(base64.b64decode(src))
    params = [u for u in uops if u.op is Ops.PARAM]
    return fake_cubin(name, program_blob(uops), 8 * len(params))

class FakeOrinRenderer(PythonRenderer):
  """tinygrad's Python-emulator renderer, with the launch limits of the Orin's GPU and no tensor cores (the emulator has
  none for sm_87 fp32, and fp16 needs Python 3.12 there).

  No shared memory (shared_max = 0), so tinygrad picks no GROUP/GROUPTOP reductions here. That is an emulator cost, not
  an Orin fact: in a shared-memory reduction every thread of the block runs the final loop, and the emulator runs each
  thread's Python, so one 16-thread r_32_16_16 took 2-4 s per launch (151 ms -> 43 ms for that shape without shared
  memory). The real Orin's renderer (CUDA/PTX, sm_87) keeps shared memory; the fake checks the driver path -- QMDs,
  constant buffer, GPFIFO, semaphores, copies -- not the renderer's shared-memory choices."""
  compiler = FakeOrinCompiler()
  global_max, local_max, shared_max = (2147483647, 65535, 65535), (1024, 1024, 64), 0
  def __init__(self, target):
    super().__init__(target)
    self.target, self.tensor_cores = replace(self.target, device="NV"), []
  def render(self, uops) -> str:
    name = next((u.arg.function_name for u in uops if u.op is Ops.SINK and u.arg is not None), "fake_kernel")
    return base64.b64encode(pickle.dumps((name, uops))).decode()
