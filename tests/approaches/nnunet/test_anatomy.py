import numpy as np

from lumbar_bench.approaches.nnunet import anatomy as an


def _spine(size=64):
    """Vertebrae (1) and discs (2) stacked vertically; rows go down the spine."""
    label = np.zeros((size, size), np.uint8)
    for k in range(6):
        top = 4 + k * 10
        label[top : top + 7, 20:40] = 1
        if k < 5:
            label[top + 7 : top + 10, 22:38] = 2
    return label


GEOM = an.SliceGeometry.of(np.zeros(3), np.array([0, 1, 0, 0, 0, -1.0]), (1.0, 1.0), (64, 64), 64)


def test_levels_are_counted_from_the_bottom():
    label = _spine()
    discs = an.structures(label, 2, 4)
    verts = an.structures(label, 1, 4)
    levels = an.disc_levels(discs, GEOM)
    assert list(levels) == ["l5_s1", "l4_l5", "l3_l4", "l2_l3", "l1_l2"]
    assert levels["l5_s1"].row > levels["l1_l2"].row  # lowest disc is furthest down the image
    assert an.order_ok(verts, discs, GEOM)
    below, above = an.bracketing(verts, levels["l3_l4"], GEOM)
    assert below.row > levels["l3_l4"].row > above.row


def test_region_is_sized_by_the_neighbouring_vertebrae():
    label = _spine()
    verts = an.structures(label, 1, 4)
    disc = an.disc_levels(an.structures(label, 2, 4), GEOM)["l3_l4"]
    below, above = an.bracketing(verts, disc, GEOM)
    axis, a, b = an.region_axes(disc, below, above, along=0.5, across=0.5, fallback=3)
    assert abs(abs(axis[0]) - 1) < 1e-6  # spine runs along the rows
    assert a == 0.5 * 10 / 2 and b == 0.5 * 20 / 2
    region = an.ellipse(label.shape, (disc.row, disc.col), axis, a, b)
    assert region.sum() > 10 and region[int(disc.row), int(disc.col)]
    ring = an.ring(region, 1)
    assert ring.any() and not (ring & region).any()
