"""Compile CUDA kernels to PTX with the real compiler (NVVM), no GPU needed.

Run as a script in a process where Numba's simulator is off:

    python tests/compile_kernels.py SIGNATURES.pkl OUT.json [CC]
    python tests/compile_kernels.py --probe


SIGNATURES.pkl holds ``{(module, kernel name): [tuple of Numba argument types, ...]}``;
OUT.json gets one record per signature: the kernel, its argument types, and the distinct
float64 instructions of its PTX (``add.f64``, ``cvt.f64.f32``, ...). CC is the compute
capability, default 9.0 (H200). A kernel that does not compile raises here, with Numba's
error. ``--probe`` compiles one empty kernel: exit status 0 when the compiler is there, else
:data:`COMPILER_ABSENT` with one line saying which library is missing.
"""

import importlib
import json
import pickle
import re
import sys

from numba import cuda
from numba.core import types

#: Exit status of ``--probe`` when NVVM or NVRTC cannot be loaded (no ``ptx`` extra).
COMPILER_ABSENT = 3
FLOAT64_INSTRUCTION = re.compile(r"\b[a-z][a-z0-9]*(?:\.[a-z0-9]+)*\.f64\b")


def float64_instructions(ptx: str) -> list[str]:
    """Distinct PTX instructions (with their modifiers) that read or write float64."""
    return sorted(set(FLOAT64_INSTRUCTION.findall(ptx)))


def main(signatures_path: str, out_path: str, cc: str = "9.0") -> None:
    with open(signatures_path, "rb") as fh:
        signatures = pickle.load(fh)
    capability = tuple(int(part) for part in cc.split("."))
    records = []
    for (module, name), argument_lists in sorted(signatures.items()):
        kernel = getattr(importlib.import_module(module), name)
        for arguments in argument_lists:
            ptx, _ = cuda.compile_ptx(kernel.py_func, types.void(*arguments), cc=capability)
            records.append({"kernel": f"{module}.{name}",
                            "arguments": [str(a) for a in arguments],
                            "float64_instructions": float64_instructions(ptx)})
    with open(out_path, "w") as fh:
        json.dump(records, fh, indent=1)


def probe() -> int:
    """Compile an empty kernel for sm_90; :data:`COMPILER_ABSENT` and one line on stdout
    when a library of the CUDA compiler cannot be found."""
    try:
        cuda.compile_ptx(lambda: None, types.void(), cc=(9, 0))
    except Exception as error:  # noqa: BLE001 - the loaders raise several unrelated types
        if type(error).__name__ not in ("DynamicLibNotFoundError", "NvvmSupportError"):
            raise
        print(str(error).splitlines()[0])
        return COMPILER_ABSENT
    return 0


if __name__ == "__main__":
    sys.exit(probe() if sys.argv[1:] == ["--probe"] else main(*sys.argv[1:]))
