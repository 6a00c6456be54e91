"""Synthetic depth-camera scans for the tests: the generator lives in :mod:`coverage.synthetic`
(the benchmark suite needs it in an installed copy, where tests/ does not exist)."""
from coverage.synthetic import SyntheticScan, deformed_face, depth_render, grid_mesh, make_scan, scan_with_vertices

__all__ = ["SyntheticScan", "deformed_face", "depth_render", "grid_mesh", "make_scan", "scan_with_vertices"]
