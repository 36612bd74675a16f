"""The output comparison behind tuning checks and the plugin's equivalence sweeps."""

import torch

from rangedispatch import compare, default_tolerance


def softmax_pair(rows=512, cols=1000):
    torch.manual_seed(0)
    ref = torch.randn(rows, cols).softmax(-1).to(torch.bfloat16)
    return ref, ref.clone()


def nudge(t, index, rel):
    out = t.clone()
    out[index] = (out[index].float() * (1 + rel)).to(t.dtype)
    return out


def test_equal_outputs_match_and_shapes_dtypes_must_agree():
    ref, same = softmax_pair()
    assert compare(same, ref) is None
    assert "shape" in compare(same[:-1], ref).reason
    assert "dtype" in compare(same.float(), ref).reason


def test_a_rounding_outlier_of_a_bfloat16_output_is_tolerated():
    ref, _ = softmax_pair()
    rtol, _ = default_tolerance(torch.bfloat16)
    one_off = nudge(ref, (7, 11), 1.5 * rtol)  # beyond the bound, within 4x, 1 of 512000 elements
    assert compare(one_off, ref) is None


def test_many_small_misses_a_gross_miss_and_a_wrong_row_still_fail():
    ref, _ = softmax_pair()
    rtol, _ = default_tolerance(torch.bfloat16)
    many = ref.clone()
    many[:, :200] = (many[:, :200].float() * (1 + 1.5 * rtol)).to(torch.bfloat16)
    found = compare(many, ref)
    assert found is not None and int(found.reason.split("; ")[-1].split()[0]) > 1000  # bf16 rounding hides some
    gross = nudge(ref, (3, 4), 2.0)  # one element tripled
    assert "1 of 512000" in compare(gross, ref).reason
    wrong_row = ref.clone()
    wrong_row[-1] = 0
    assert compare(wrong_row, ref) is not None


def test_full_precision_outputs_get_no_outlier_allowance():
    torch.manual_seed(0)
    ref = torch.randn(512, 1000)
    rtol, _ = default_tolerance(torch.float32)
    one_off = ref.clone()
    one_off[7, 11] *= 1 + 3 * rtol
    found = compare(one_off, ref)
    assert found is not None and found.index == (7, 11)
