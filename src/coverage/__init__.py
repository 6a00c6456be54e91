"""coverage: roller and pen coverage plans over a 3D face.

The import name is ``coverage`` (so it cannot share an environment with coverage.py);
the command line is ``coverage-planner``.
"""
__version__ = "0.1.0"

from .density import DensityMap, ZoneStats, density
from .errors import CoverageError, LandmarkError, MeshError, ProtocolError
from .face import Face
from .protocol import Lesion, Protocol
from .zones import Exclusion, ZoneMap
# the functions take the names of their modules: coverage.plan(...) and coverage.verify(...)
from .plan import Plan, plan  # noqa: E402
from .planio import load_plan, plan_schema  # noqa: E402
from .verify import Verification, Violation, verify  # noqa: E402


__all__ = [
    "CoverageError", "DensityMap", "Exclusion", "Face", "LandmarkError", "Lesion", "MeshError",
    "Plan", "Protocol", "ProtocolError", "Verification", "Violation", "ZoneMap", "ZoneStats", "density", "load_plan", "plan",
    "plan_schema", "verify", "__version__",
]
