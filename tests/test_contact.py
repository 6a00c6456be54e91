"""Chart contacts (coverage.contact): the kernel against its NumPy twin bit for bit, every
decided answer against shapely's exact DE-9IM relation, and small cases worked by hand."""
import numpy as np
import pytest
import shapely

from coverage import contact
from coverage.contact import BOUNDARY, DISJOINT, INTERIOR, UNDECIDED


def lattice_cases(rng, n_tri, n_seg, scale):
    """Triangles and segments on a small lattice (shared corners, collinear edges, points on
    edges: the degenerate contacts a region drawn along mesh edges makes), scaled by
    ``scale`` (0.1: most turns inexact in binary), then some corners of the triangles
    reused as segment ends and points."""
    corners = rng.integers(-3, 4, size=(n_tri, 6)).astype(np.float64) * scale
    segments = rng.integers(-3, 4, size=(n_seg, 4)).astype(np.float64) * scale
    pick = rng.integers(n_tri, size=n_seg // 2)
    k = rng.integers(3, size=(n_seg // 2, 2))
    segments[: n_seg // 2, :2] = np.stack([corners[pick, 2 * k[:, 0]], corners[pick, 2 * k[:, 0] + 1]], axis=1)
    segments[: n_seg // 2, 2:] = np.stack([corners[pick, 2 * k[:, 1]], corners[pick, 2 * k[:, 1] + 1]], axis=1)
    points = rng.random(n_seg) < 0.2
    segments[points, 2:] = segments[points, :2]
    return corners, segments


def all_pairs(corners, segments):
    tri, seg = np.meshgrid(np.arange(len(corners)), np.arange(len(segments)), indexing="ij")
    return tri.ravel(), seg.ravel()


def relation_codes(corners, segments, tri, seg):
    """What shapely's exact predicates say of each pair (triangles of no area: -1)."""
    out = np.full(len(tri), -1)
    for i, (t, s) in enumerate(zip(tri, seg)):
        poly = shapely.Polygon(corners[t].reshape(3, 2))
        p, q = segments[s, :2], segments[s, 2:]
        geom = shapely.Point(p) if (p == q).all() else shapely.LineString([p, q])
        if shapely.area(poly) == 0:
            continue
        if not shapely.intersects(geom, poly):
            out[i] = DISJOINT
        else:
            m = shapely.relate(geom, poly)
            out[i] = INTERIOR if (m[0] != "F" or m[3] != "F") else BOUNDARY
    return out


@pytest.mark.parametrize("scale", [1.0, 0.1, 1e-3])
def test_kernel_equals_reference_and_decided_answers_are_exact(rng, scale):
    corners, segments = lattice_cases(rng, 60, 80, scale)
    tri, seg = all_pairs(corners, segments)
    got = contact.contacts(corners, segments, tri, seg)
    np.testing.assert_array_equal(got, contact.contacts_reference(corners, segments, tri, seg))
    expected = relation_codes(corners, segments, tri, seg)
    decided = got != UNDECIDED
    np.testing.assert_array_equal(got[decided], expected[decided])
    # a triangle of no area is never decided; on the lattice every other pair is
    assert (got[expected == -1] == UNDECIDED).all()
    # (three lattice points on a line without a shared one are left to the general
    # predicates: the filter cannot tell their 0 from a rounded one)
    # every kind of contact is exercised
    assert set(np.unique(got[decided])) == {DISJOINT, BOUNDARY, INTERIOR}


def test_chart_like_contacts_are_decided(rng):
    """A jittered mesh with segments along its edges and points at its vertices (a region
    drawn through mesh vertices, as the exclusions are): every pair is decided, exactly."""
    n = 12
    grid = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=-1).reshape(-1, 2)
    xy = grid * 1.7 + rng.uniform(-0.5, 0.5, size=grid.shape)
    i = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    faces = np.concatenate([np.stack([i, i + n, i + 1], axis=1), np.stack([i + 1, i + n, i + n + 1], axis=1)])
    corners = xy[faces].reshape(-1, 6)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = edges[rng.integers(len(edges), size=60)]
    verts = rng.integers(len(xy), size=40)
    segments = np.concatenate([np.hstack([xy[edges[:, 0]], xy[edges[:, 1]]]), np.hstack([xy[verts], xy[verts]])])
    tri, seg = all_pairs(corners, segments)
    got = contact.contacts(corners, segments, tri, seg)
    np.testing.assert_array_equal(got, contact.contacts_reference(corners, segments, tri, seg))
    assert (got != UNDECIDED).all()
    near = np.flatnonzero(got != DISJOINT)
    sample = np.concatenate([near, rng.choice(np.flatnonzero(got == DISJOINT), size=500, replace=False)])
    np.testing.assert_array_equal(got[sample], relation_codes(corners, segments, tri[sample], seg[sample]))
    assert set(np.unique(got)) == {DISJOINT, BOUNDARY}   # along edges: nothing crosses an interior


def test_kernel_equals_reference_on_random_floats_and_odd_values(rng):
    corners = rng.normal(scale=20.0, size=(200, 6))
    segments = rng.normal(scale=20.0, size=(300, 4))
    segments[::7, 2:] = segments[::7, :2]
    corners[3, 2] = np.nan
    corners[4, 0] = np.inf
    corners[5] = [0.0, 0.0, 1e200, 0.0, 0.0, 1e200]
    segments[6, 1] = -np.inf
    segments[8] = [1e-310, 0.0, 2e-310, 3e-310]   # subnormal: products underflow
    corners[9] = [0.0, 0.0, 1e-170, 0.0, 0.0, 1e-170]
    tri, seg = rng.integers(200, size=20000), rng.integers(300, size=20000)
    tri[:300], seg[:300] = 3, np.arange(300)
    tri[300:600], seg[300:600] = 9, np.arange(300)
    got = contact.contacts(corners, segments, tri, seg)
    np.testing.assert_array_equal(got, contact.contacts_reference(corners, segments, tri, seg))
    assert (got[(tri == 3) | (tri == 4) | (tri == 5) | (seg == 6) | (seg == 8)] == UNDECIDED).all()
    decided = np.flatnonzero(got != UNDECIDED)[:3000]
    expected = relation_codes(corners, segments, tri[decided], seg[decided])
    np.testing.assert_array_equal(got[decided], expected)


def test_hand_worked_contacts():
    # the triangle (0,0) (4,0) (0,4), given clockwise in the second row
    corners = np.array([[0, 0, 4, 0, 0, 4], [0, 0, 0, 4, 4, 0], [0, 0, 1, 1, 2, 2]], dtype=np.float64)
    segments = np.array([
        [5, 5, 6, 7],      # apart: beyond the hypotenuse
        [0, 0, 4, 0],      # along an edge, corner to corner
        [-1, 0, 6, 0],     # along an edge's line, past both corners
        [4, 0, 6, 1],      # from a corner outwards
        [1, 1, 5, 6],      # from inside outwards
        [-1, 2, 5, 2],     # straight across
        [4, 0, 0, 4],      # the hypotenuse itself
        [0, 0, 0, 0],      # a corner (a point)
        [1, 1, 1, 1],      # an interior point
        [3, 3, 3, 3],      # a point outside
        [-1, 6, 6, -1],    # parallel to the hypotenuse, outside
        [2, 2, 2, 2],      # a point on the hypotenuse between its corners: its turn with
                           # the hypotenuse is 4 - 4, which the filter cannot tell from a
                           # rounded difference (left to the general predicates)
    ], dtype=np.float64)
    expected = [DISJOINT, BOUNDARY, BOUNDARY, BOUNDARY, INTERIOR, INTERIOR, BOUNDARY, BOUNDARY, INTERIOR,
                DISJOINT, DISJOINT, UNDECIDED]
    for t in (0, 1):
        tri, seg = np.full(len(segments), t), np.arange(len(segments))
        np.testing.assert_array_equal(contact.contacts(corners, segments, tri, seg), expected)
        np.testing.assert_array_equal(contact.contacts_reference(corners, segments, tri, seg), expected)
    # a triangle of no area is always undecided
    tri, seg = np.full(len(segments), 2), np.arange(len(segments))
    assert (contact.contacts(corners, segments, tri, seg) == UNDECIDED).all()


def test_turns_left_to_the_filter():
    # (0.1, 0.1) (0.2, 0.2) (0.3, 0.3): the determinant rounds to 0 with nothing to show
    # the 0 is exact, so the turn is unknown, and so is a segment's contact that needs it
    corners = np.array([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0], [0.1, 0.1, 0.2, 0.2, 0.1, 0.4]])
    segments = np.array([[0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.4, 0.3]])
    assert contact.contacts(corners, segments, [0, 1, 1], [0, 0, 1]).tolist() == [INTERIOR, UNDECIDED, UNDECIDED]
    assert contact._turn_reference(np.array([0.1]), np.array([0.1]), np.array([0.2]), np.array([0.2]),
                                   np.array([0.3]), np.array([0.3]))[0] == 2


def test_bad_pairs_are_refused():
    corners, segments = np.zeros((2, 6)), np.zeros((3, 4))
    with pytest.raises(ValueError):
        contact.contacts(corners, segments, [0, 2], [0, 0])
    with pytest.raises(ValueError):
        contact.contacts(corners, segments, [0], [-1])
    with pytest.raises(ValueError):
        contact.contacts(corners, segments, [0], [0, 1])
    assert len(contact.contacts(corners, segments, [], [])) == 0
