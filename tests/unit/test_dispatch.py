"""End-to-end eager dispatch on CPU tensors: seeds 000 and 002, upstream's form, the decorator."""

import threading
import warnings

import pytest
import torch

import rangedispatch as rd
from rangedispatch import CustomOpConfig, CustomOpRangeConfig, register_custom_op_autotuning
from rangedispatch.testing import FakeBenchmarker


def short_sequence_impl(x, scale):
    return x * scale.unsqueeze(0).unsqueeze(0)


def medium_sequence_impl(x, scale):
    return x * scale.view(1, 1, -1).expand_as(x)


def long_sequence_impl(x, scale):
    return torch.mul(x, scale.view(1, 1, -1))


def boundary_sizes(ranges):
    sizes = set()
    for lo, hi in ranges:
        sizes |= {lo, lo + 1}
        if lo > 0:
            sizes.add(lo - 1)
        if hi != float("inf"):
            sizes |= {hi - 1, hi, hi + 1}
    return sorted(s for s in sizes if s >= 1)


def test_seed_000_example_real_timing_all_boundaries(caplog):
    @torch.library.custom_op("rdtest::dynamic_op", mutates_args=())
    def dynamic_op(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return x * scale.unsqueeze(0).unsqueeze(0)

    @dynamic_op.register_fake
    def _(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    ranges = [(0, 512), (512, 2048), (2048, float("inf"))]
    configs = [
        CustomOpConfig(fn, tensor_name="x", dim_index=1, dim_range=r)
        for r in ranges
        for fn in (short_sequence_impl, medium_sequence_impl, long_sequence_impl)
    ]
    with caplog.at_level("INFO", logger="rangedispatch"):
        register_custom_op_autotuning(
            dynamic_op,
            configs=configs,
            input_gen_fns={
                "x": lambda fake: torch.randn_like(fake, dtype=torch.float32),
                "scale": lambda fake: torch.randn_like(fake, dtype=torch.float32),
            },
            range_upper_bound=2200,
        )
        scale = torch.randn(16)
        for size in boundary_sizes(ranges):
            x = torch.randn(2, size, 16)
            torch.testing.assert_close(dynamic_op(x, scale), x * scale)
    text = caplog.text
    assert "=== Range-based Autotuning for dynamic_op_autotuned ===" in text
    assert "Dispatch dimension: x[1]" in text
    assert "Range [512, 2048): Selected implementation" in text and "after benchmarking 3 candidates" in text
    assert "=== Range-based Autotuning Summary for dynamic_op_autotuned ===" in text
    table = rd.dispatcher_of(dynamic_op).table
    assert [str(r.range) for r in table.results] == ["[0, 512)", "[512, 2048)", "[2048, inf)"]
    assert all(all(t > 0 for t in ts) for r in table.results for ts in r.timings.values())


def test_seed_002_range_config_eager():
    @torch.library.custom_op("rdtest::weighted_scale", mutates_args=())
    def weighted_scale(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    @weighted_scale.register_fake
    def _(x, weight):
        return torch.empty_like(x)

    def chunked(x, weight):
        return torch.cat([x[:, s:s + 256] * weight for s in range(0, x.shape[1], 256)], dim=1)

    register_custom_op_autotuning(
        weighted_scale,
        configs=[CustomOpRangeConfig("x", 1, [(0, 512), (512, 2048), (2048, float("inf"))],
                                     [lambda x, w: torch.einsum("bsh,h->bsh", x, w), chunked,
                                      lambda x, w: x * w.view(1, 1, -1)])],
        input_gen_fns={"x": lambda fake: torch.randn_like(fake), "weight": lambda fake: torch.ones_like(fake)},
    )
    weight = torch.ones(128)
    for shape in [(2, 256, 128), (2, 1024, 128), (2, 4096, 128)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(weighted_scale(x, weight), x * weight, rtol=1e-5, atol=1e-5)


def test_generators_for_a_missing_device_fall_back_with_a_warning():
    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[8], cache=False,
                       input_gen_fns={"x": lambda fake: torch.randn_like(fake, device="no-such-device")})
    def f(x):
        return x + 1

    f.register_impl(lambda x: 1 + x)
    with pytest.warns(RuntimeWarning, match=r"input_gen_fns\['x'\] raised"):
        torch.testing.assert_close(f(torch.zeros(3)), torch.ones(3))


def test_upstream_dispatch_on_split_points_form():
    bench = FakeBenchmarker({"mm_ref": 5.0, "a": lambda s: 1.0 if s <= 512 else 9.0,
                             "b": lambda s: 1.0 if 512 < s <= 2048 else 9.0})

    @torch.library.custom_op("rdtest::mm_ref", mutates_args=())
    def mm_ref(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ y

    def a(x, y):
        return torch.mm(x, y)

    def b(x, y):
        return torch.matmul(x, y)

    register_custom_op_autotuning(
        mm_ref,
        configs=[CustomOpConfig(a), CustomOpConfig(b)],
        dispatch_on={"tensor_name": "x", "dim": 0, "range_upper_bound": 4096},
        split_points=[512, 2048],
        benchmarker=bench,
    )
    y = torch.randn(8, 4)
    mm_ref(torch.randn(3, 8), y)
    table = rd.dispatcher_of(mm_ref).table
    # a split point belongs to the range below it
    assert [(str(r.range), r.winner) for r in table.results] == [
        ("[1, 513)", "a"), ("[513, 2049)", "b"), ("[2049, inf)", "mm_ref")]
    assert max(s for _, s in bench.calls) == 4096
    for size in (1, 511, 512, 513, 2048, 2049, 3000):
        x = torch.randn(size, 8)
        torch.testing.assert_close(mm_ref(x, y), x @ y)


def test_size_below_every_range_runs_reference_and_warns_once():
    bench = FakeBenchmarker({"f": 2.0, "g": 1.0})

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[16], benchmarker=bench, cache=False)
    def f(x):
        return x * 2

    @f.register_impl
    def g(x):
        return x + x

    f(torch.ones(4))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = f(torch.ones(0))
        f(torch.ones(0))
    assert out.shape == (0,)
    assert len([w for w in seen if "outside every tuned range" in str(w.message)]) == 1


def test_dispatch_tensor_not_first_kwargs_and_multiple_outputs():
    bench = FakeBenchmarker({"split": 2.0, "fast": lambda s: 1.0 if s < 64 else 3.0})

    @rd.range_dispatch(dispatch_on=("q", 1), split_points=[63], benchmarker=bench, cache=False)
    def split(bias, q, *, scale=2.0):
        return q * scale + bias, q.sum(1)

    @split.register_impl
    def fast(bias, q, *, scale=2.0):
        return torch.addcmul(bias, q, torch.full_like(q, scale)), q.sum(1)

    bias = torch.randn(4, 1)
    for size in (1, 63, 64, 100):
        q = torch.randn(4, size)
        for out in (split(bias, q, scale=3.0), split(bias=bias, q=q, scale=3.0)):
            torch.testing.assert_close(out[0], q * 3.0 + bias)
            torch.testing.assert_close(out[1], q.sum(1))
    assert split.table.winners == {rd.Range(1, 64): "fast", rd.Range(64, None): "split"}


def test_tied_tensors_resize_together_and_int_inputs_keep_values():
    seen = []

    @rd.range_dispatch(dispatch_on=("q", 1), tie={"k": 1}, split_points=[32],
                       benchmarker=FakeBenchmarker({}), cache=False)
    def attn(q, k, idx):
        seen.append((q.shape[1], k.shape[1], idx.tolist()))
        return (q @ k.transpose(1, 2)).index_select(0, idx)

    attn.register_impl(lambda q, k, idx: torch.bmm(q, k.transpose(1, 2))[idx])
    idx = torch.tensor([1, 0])
    q, k = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    attn(q, k, idx)
    tuning = seen[:-1]
    # [1, 33) spans 5 octaves: 4 samples by default; [33, inf) up to 256 spans 3: 3 samples
    assert {s for s, t, _ in tuning} == {1, 3, 10, 32, 33, 92, 256}
    assert all(s == t for s, t, _ in tuning)
    assert all(i == [1, 0] for _, _, i in tuning)


def test_global_choice_without_dispatch_dim():
    bench = FakeBenchmarker({"f": 2.0, "g": 1.0})

    @torch.library.custom_op("rdtest::nodispatch", mutates_args=())
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    def g(x):
        return x + x

    op = register_custom_op_autotuning(f, configs=[CustomOpConfig(g)], benchmarker=bench)
    torch.testing.assert_close(f(torch.ones(3)), torch.full((3,), 2.0))
    assert op.table.winners == {rd.Range(0, None): "g"}
    assert bench.sizes == [0]


def test_bound_params_are_candidates():
    bench = FakeBenchmarker({"mm_k": 3.0, "mm_k(k_splits=4)": 1.0, "mm_k(k_splits=2)": 2.0})

    @torch.library.custom_op("rdtest::mm_k", mutates_args=())
    def mm_k(a: torch.Tensor, b: torch.Tensor, k_splits: int = 1) -> torch.Tensor:
        return sum(x @ y for x, y in zip(a.chunk(k_splits, 1), b.chunk(k_splits, 0)))

    op = register_custom_op_autotuning(mm_k, configs=[CustomOpConfig(k_splits=2), CustomOpConfig(k_splits=4)],
                                       dispatch_on=("a", 1), tie={"b": 0}, split_points=[64], benchmarker=bench)
    a, b = torch.randn(4, 128), torch.randn(128, 3)
    torch.testing.assert_close(mm_k(a, b), a @ b, rtol=1e-4, atol=1e-4)
    assert set(op.table.winners.values()) == {"mm_k(k_splits=4)"}


def test_two_threads_first_calls_tune_once():
    started = threading.Barrier(2)
    bench = FakeBenchmarker({})

    @rd.range_dispatch(dispatch_on=("x", 0), split_points=[8], benchmarker=bench, cache=False)
    def f(x):
        return x + 1

    f.register_impl(lambda x: 1 + x)
    results = []

    def worker():
        started.wait()
        results.append(f(torch.zeros(5)))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and all(torch.equal(r, torch.ones(5)) for r in results)
    assert bench.calls.count(("f", 1)) == 1


def test_decorator_form_real_timing_and_explain():
    @rd.range_dispatch(dispatch_on=("x", 0), ranges=[(0, 64), (64, None)], range_upper_bound=4096)
    def total(x):
        return x.sum(0)

    @total.register_impl
    def python_loop(x):
        out = torch.zeros_like(x[0])
        for row in x:
            out = out + row
        return out

    table = total.tune(torch.randn(16, 8))
    # a Python loop over 4096 rows is never faster than one reduction
    assert table.winners[rd.Range(64, None)] == "total"
    text = total.explain(1000)
    assert "x[0]=1000" in text and "'total'" in text and "python_loop" in text
    assert "untuned" not in repr(total)
