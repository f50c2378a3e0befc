"""Build of the segdcn._C extension from kernels/.

CPU kernels are always built. CUDA kernels are built when nvcc and a CUDA build of torch
are present; SEGDCN_CUDA=1 or SEGDCN_CUDA=0 forces the choice. CUDA_HOME defaults to
/usr/local/cuda and TORCH_CUDA_ARCH_LIST to "8.0;9.0".
"""

import glob
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

# torch.utils.cpp_extension reads these at import time.
if "CUDA_HOME" not in os.environ and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def cuda_wanted() -> bool:
    found = torch.version.cuda is not None and (
        shutil.which("nvcc") is not None
        or (CUDA_HOME is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")))
    )
    flag = os.environ.get("SEGDCN_CUDA", "")
    if flag not in ("", "0", "1"):
        sys.exit(f"SEGDCN_CUDA must be 0 or 1, got {flag!r}")
    if flag == "1" and not found:
        sys.exit(
            "SEGDCN_CUDA=1 needs nvcc and a CUDA build of torch "
            f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME})"
        )
    return found if flag == "" else flag == "1"


def extension():
    sources = sorted(glob.glob("kernels/*.cpp") + glob.glob("kernels/cpu/*.cpp"))
    cxx = ["-O3", "-fopenmp"]
    if not cuda_wanted():
        return CppExtension("segdcn._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    arch = os.environ["TORCH_CUDA_ARCH_LIST"]
    macros = ["-DSEGDCN_WITH_CUDA", f'-DSEGDCN_CUDA_ARCH_LIST="{arch}"']
    return CUDAExtension(
        "segdcn._C",
        sources + sorted(glob.glob("kernels/cuda/*.cu")),
        extra_compile_args={"cxx": cxx + macros, "nvcc": ["-O3", *macros]},
        extra_link_args=["-fopenmp"],
    )


class build_py_with_conf(build_py):
    """Ships the top-level conf/ inside the package as segdcn/conf, so that a wheel or a non-editable
    install finds the Hydra configs from any folder (segdcn.config.conf_dir)."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "segdcn", "conf")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, "conf"), target, ignore=shutil.ignore_patterns("__pycache__"))


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True), "build_py": build_py_with_conf},
)
