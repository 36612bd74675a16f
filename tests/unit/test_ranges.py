import pytest

from rangedispatch import ConfigError, Partition, Range
from rangedispatch.decide.ranges import check_ranges, parse_range, ranges_from_split_points


def test_parse_range_accepts_inf_and_none():
    assert parse_range((2048, float("inf"))) == Range(2048, None)
    assert parse_range((0, None)) == Range(0, None)
    assert parse_range((0.0, 512.0)) == Range(0, 512)


@pytest.mark.parametrize(
    "value, fragment",
    [
        ((-1, 4), "non-negative"),
        ((4, 4), "start < end"),
        ((8, 4), "start < end"),
        ((0.5, 4), "integer"),
        (("a", 4), "integer"),
        ((float("inf"), None), "finite"),
        ((1, 2, 3), r"\(start, end\) pair"),
    ],
)
def test_parse_range_rejects(value, fragment):
    with pytest.raises((ConfigError, TypeError), match=fragment):
        parse_range(value)


def test_overlap_message_is_word_for_word():
    with pytest.raises(ValueError) as info:
        check_ranges([Range(0, 512), Range(256, 1024)])
    assert str(info.value) == "Ranges 0 and 1 overlap: [0, 512) and [256, 1024)"


def test_unsorted_ranges_rejected():
    with pytest.raises(ValueError, match="sorted by start"):
        check_ranges([Range(512, 1024), Range(0, 256)])


def test_split_points_follow_upstream_inclusive_meaning():
    assert ranges_from_split_points([512, 2048]) == (Range(1, 513), Range(513, 2049), Range(2049, None))
    for bad in ([], [2048, 512], [512, 512], [0], "512"):
        with pytest.raises(ValueError):
            ranges_from_split_points(bad)


def test_partition_fills_gaps_and_merges_equal_neighbours():
    part = Partition.build(
        [(Range(1, 513), "a"), (Range(513, 1025), "a"), (Range(1025, 2049), "b"), (Range(4096, None), "c")]
    )
    assert [(str(s.range), s.owner) for s in part.segments] == [
        ("[0, 1)", None),
        ("[1, 1025)", "a"),
        ("[1025, 2049)", "b"),
        ("[2049, 4096)", None),
        ("[4096, inf)", "c"),
    ]
    assert part.bounds == (1, 1025, 2049, 4096)
    # lo-1, lo, hi-1, hi of every segment
    for seg in part.segments:
        assert part.lookup(seg.range.lo) == seg
        if seg.range.hi is not None:
            assert part.lookup(seg.range.hi - 1) == seg
            assert part.lookup(seg.range.hi) != seg
        if seg.range.lo > 0:
            assert part.lookup(seg.range.lo - 1) != seg
