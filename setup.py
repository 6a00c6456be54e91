"""Extension modules only; metadata lives in pyproject.toml."""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["lift", "proximity", "density", "drum", "pen", "raster", "paths", "curvature", "contact"]

extensions = [
    Extension(
        f"coverage._ext.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=[numpy.get_include(), "ext"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        # no fused multiply-adds: the kernels are compared with their NumPy twins bit for bit,
        # and GCC contracts a * b + c into one rounding wherever the target has FMA
        extra_compile_args=["-O3", "-ffp-contract=off"],
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
