"""Exceptions a user can act on.

Every message names the field or file, the value, and the fix, in one line, so the command
line can print it as is (no traceback unless ``--debug``).
"""


class CoverageError(Exception):
    """Base class: bad input the user can fix. The command line prints it in one line."""


class MeshError(CoverageError):
    """A mesh file or array cannot be used (missing, unreadable, empty, wrong size)."""


class LandmarkError(CoverageError):
    """Landmarks have the wrong shape, non-finite values, or do not match the mesh."""


class ProtocolError(CoverageError):
    """A protocol field is missing, unknown, out of range, or inconsistent."""
