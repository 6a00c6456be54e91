"""Bundled data files (the default protocol)."""
