"""The bench's cases of the roller's frame kernels, the box binning and the zone label cells:
built on the default face's own data, not trivial (both answers present), and each kernel
equal to its NumPy reference there. No timing is asserted."""
import numpy as np
import pytest

from coverage import bench


@pytest.fixture(scope="module")
def roller_cases(default_face, default_zones):
    return {case.name: case for case in bench.roller_cases(default_face, default_zones)}


@pytest.mark.parametrize("name", ["frame_fields", "ends_blocked", "within_reach"])
def test_roller_cases_agree(roller_cases, name):
    case = roller_cases[name]
    assert case.agree(case.kernel(), case.reference())


def test_roller_cases_are_not_trivial(roller_cases):
    scale, band = roller_cases["frame_fields"].kernel()
    works = ~np.isnan(band)
    assert 0.1 < works.mean() < 0.9 and (scale != 1.0).any()
    blocked = roller_cases["ends_blocked"].kernel()
    assert 0 < blocked.sum() < len(blocked)
    near, live = roller_cases["within_reach"].kernel()
    assert 0 < near.mean() < 1 and live.any() and not live.all()


def test_bin_boxes_case_agrees():
    case = bench.bin_boxes_case(2.0)
    start, items = case.kernel()
    assert len(items) > start.size // 2 and case.agree((start, items), case.reference())
    # a box in another cell is another answer
    assert not case.agree((start, items[::-1]), case.reference())


def test_label_lookup_case_agrees(default_face, default_zones):
    case = bench.label_lookup_case(default_face, default_zones, 20_000)
    labels, rest = case.kernel()
    assert (labels >= 0).any() and len(rest)
    assert case.agree((labels, rest), case.reference())


def test_contacts_case_pairs_the_keepout_outline_with_the_triangles_it_meets(default_face, default_zones):
    from coverage import contact

    case = bench.contacts_case(default_face, default_zones)
    codes = case.kernel()
    assert case.agree(codes, case.reference())
    # boxes meet for every pair, so the answers span apart, touching and crossing; the
    # outline runs along mesh edges, so touching (BOUNDARY) pairs are common, and on the
    # bundled face every pair is decided
    found = set(np.unique(codes).tolist())
    assert {contact.DISJOINT, contact.BOUNDARY, contact.INTERIOR} <= found
    assert contact.UNDECIDED not in found
    assert not case.agree(np.where(codes == contact.BOUNDARY, contact.INTERIOR, codes).astype(codes.dtype),
                          case.reference())
