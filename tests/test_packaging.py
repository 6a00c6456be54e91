"""The three install routes work and ship what the package needs, without network.

An sdist is built from the checkout, a wheel from that sdist (not from the checkout, so the
sdist is proven complete), and the wheel is installed into a private directory and used from
outside the checkout. The editable install is the one this test run imports. Builds use the
running interpreter's setuptools, Cython and NumPy (no build isolation, no index); they take
about a minute and run once per session.
"""
import importlib.machinery
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("lift", "proximity", "density", "drum", "pen", "raster", "paths", "curvature", "contact")
MESH_FILES = ("canonical_face_model.obj", "landmarks.json", "NOTICE", "LICENSE-mediapipe.txt")
SDIST_REQUIRED = (
    *(f"ext/{name}.pyx" for name in KERNELS), "ext/_geom.pxd", "ext/_locate.pxd", "ext/_prefetch.pxd",
    *(f"meshes/{name}" for name in MESH_FILES),
    "src/coverage/data/default_protocol.toml", "src/coverage/data/plan.schema.json", "setup.py", "pyproject.toml", "README.md",
)
WHEEL_REQUIRED = (
    *(f"coverage/meshes/{name}" for name in MESH_FILES), "coverage/data/default_protocol.toml", "coverage/data/plan.schema.json",
    "coverage/__init__.py", "coverage/cli.py",
)
BUILD_ARTEFACTS = (".c", ".so", ".pyd", ".o", ".pyc")


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; fail the test with its output if it does not succeed."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, (f"exit {proc.returncode}: {' '.join(cmd)}\n"
                                  f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {[p.name for p in found]}"
    return found[0]


def is_extension(name: str, kernel: str) -> bool:
    """``name`` is the compiled module ``coverage._ext.<kernel>`` for this interpreter."""
    return any(name == f"coverage/_ext/{kernel}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES)


@pytest.fixture(scope="session")
def sdist(tmp_path_factory) -> Path:
    missing = [m for m in ("setuptools", "Cython", "numpy", "build") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"building without isolation needs {', '.join(missing)} in {sys.executable}; "
                    "install them (they are the build requirements in pyproject.toml)")
    outdir = tmp_path_factory.mktemp("sdist")
    # --skip-dependency-check: the build requirements are whatever this interpreter has
    # (the dev venv's setuptools may be older than the declared floor); a missing one fails the build.
    run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check",
         "--outdir", outdir, ROOT])
    return only(outdir, "*.tar.gz")


@pytest.fixture(scope="session")
def wheel(sdist, tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "-w", outdir, sdist], cwd=outdir)
    return only(outdir, "*.whl")


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("target")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir",
         "--target", target, wheel], cwd=target)
    return target


def sdist_names(sdist: Path) -> set[str]:
    """Member paths with the top directory (``<name>-<version>/``) removed."""
    with tarfile.open(sdist) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_sdist_ships_sources_and_data(sdist):
    names = sdist_names(sdist)
    missing = [name for name in SDIST_REQUIRED if name not in names]
    assert not missing, f"{sdist.name} lacks {missing}"


def test_sdist_has_no_build_artefacts(sdist):
    artefacts = sorted(name for name in sdist_names(sdist) if name.endswith(BUILD_ARTEFACTS))
    assert not artefacts, f"{sdist.name} ships build artefacts: {artefacts}"


def test_wheel_from_sdist_ships_kernels_and_data(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for kernel in KERNELS:
        assert any(is_extension(name, kernel) for name in names), \
            f"{wheel.name} lacks the compiled coverage._ext.{kernel}: {sorted(n for n in names if '_ext' in n)}"
    missing = [name for name in WHEEL_REQUIRED if name not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    sources = sorted(name for name in names if name.endswith((".c", ".o", ".pyx", ".pxd")))
    assert not sources, f"{wheel.name} ships build inputs or artefacts: {sources}"
    assert "coverage-planner = coverage.cli:main" in entry_points


CHECK_INSTALLED = textwrap.dedent("""
    import importlib, importlib.resources, json, sys
    from pathlib import Path

    target = Path(sys.argv[1]).resolve()

    def under(path):
        return Path(path).resolve().is_relative_to(target)

    import coverage
    assert under(coverage.__file__), coverage.__file__
    kernels = {}
    for name in KERNEL_NAMES:
        module = importlib.import_module(f"coverage._ext.{name}")
        assert under(module.__file__), module.__file__
        kernels[name] = module.__file__
    meshes = importlib.resources.files("coverage.meshes")
    assert under(str(meshes)), meshes
    notice = (meshes / "NOTICE").read_text(encoding="utf-8")
    face = coverage.Face.default(edge_mm=3.0)
    print(json.dumps({"file": coverage.__file__, "kernels": kernels, "vertices": len(face.vertices),
                      "notice": notice}))
""").replace("KERNEL_NAMES", repr(KERNELS))


def test_installed_wheel_works_outside_the_checkout(installed, tmp_path):
    script = tmp_path / "check_installed.py"
    script.write_text(CHECK_INSTALLED, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = run([sys.executable, script, installed], cwd=tmp_path, env=env)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).resolve().is_relative_to(installed.resolve())
    assert not Path(report["file"]).resolve().is_relative_to(ROOT)
    assert set(report["kernels"]) == set(KERNELS)
    assert report["vertices"] > 468  # refined beyond the 468-vertex canonical mesh
    assert "MediaPipe Authors" in report["notice"]


def test_editable_install_is_what_this_run_imports():
    import coverage

    try:
        dist = importlib.metadata.distribution("coverage-planner")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("coverage-planner is not installed; the suite is run from a bare source tree")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if not direct_url.get("dir_info", {}).get("editable", False):
        pytest.skip(f"coverage-planner is not an editable install here (imported from {coverage.__file__}); "
                    "the suite is run against an installed copy")
    assert direct_url["url"].rstrip("/") == ROOT.as_uri(), direct_url
    src = ROOT / "src"
    assert Path(coverage.__file__).resolve().is_relative_to(src), coverage.__file__
    for name in KERNELS:
        module = importlib.import_module(f"coverage._ext.{name}")
        assert Path(module.__file__).resolve().is_relative_to(src / "coverage" / "_ext"), module.__file__
    # the package-dir mapping: coverage.meshes is the checkout's top-level meshes/
    meshes = importlib.resources.files("coverage.meshes") / "canonical_face_model.obj"
    assert Path(str(meshes)).resolve() == ROOT / "meshes" / "canonical_face_model.obj"
