"""Extension modules only; metadata lives in pyproject.toml.

The kernels that split their work over threads (``cython.parallel.prange``) are compiled
with OpenMP when the compiler accepts it (a tiny test program is compiled and linked with
``-fopenmp`` first); without it they build and run on one thread with identical results.
``COVERAGE_OPENMP=0`` in the environment builds without OpenMP.
"""
import os
import shutil
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["lift", "proximity", "density", "drum", "pen", "raster", "paths", "curvature"]
# the modules with OpenMP loops
THREADED = {"density", "lift", "raster"}

_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""


def openmp_flags() -> list:
    """["-fopenmp"] when a test program compiles and links with it, else []."""
    if os.environ.get("COVERAGE_OPENMP", "1").strip().lower() in ("0", "no", "false", "off"):
        return []
    if sys.platform == "win32":
        return []
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.errors import CompileError, LinkError
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    tmp = tempfile.mkdtemp(prefix="coverage-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(_PROBE)
        objects = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
        compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=["-fopenmp"])
        return ["-fopenmp"]
    except (CompileError, LinkError, OSError):
        return []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OPENMP = openmp_flags()

extensions = [
    Extension(
        f"coverage._ext.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=[numpy.get_include(), "ext"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=["-O3"] + (OPENMP if name in THREADED else []),
        extra_link_args=OPENMP if name in THREADED else [],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
