"""Decisions against real GPU noise: recorded H100 per-call timings replayed through the
measurement core and the tuner, scored with the recorded robust per-size times."""

import json
import math
from pathlib import Path

import pytest

from rangedispatch.testing import replay_tuning

# the recordings live in shared/data beside the checkout
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "h100_recorded_timings.json"

pytestmark = pytest.mark.skipif(not DATA.exists(), reason="the recorded timings (shared/data) are not here")

ATTENTION = ["flash_attention", "efficient_attention", "cudnn_attention"]


def workload(name):
    return json.loads(DATA.read_text())["workloads"][name]["rows"]


def oracle(rows, table, names):
    """The geomean loss of the best fixed choice per range (the floor for these split points)."""
    logs = []
    for r in table.results:
        inside = [row for row in rows if row["size"] in r.range]
        if not inside:
            continue
        def loss(n):
            return [math.log(row["truth"].get(n, math.inf) / min(row["truth"][m] for m in names if m in row["truth"]))
                    for row in inside]
        logs += min((loss(n) for n in names), key=sum)
    return math.exp(sum(logs) / len(logs))


@pytest.mark.parametrize("label, name, reference, candidates, split_points, goal", [
    ("attention, math reference", "attention", "math", ATTENTION, [128, 512, 2048], 1.02),
    ("attention, default reference", "attention", "default", ATTENTION, [128, 512, 2048], 1.05),
    ("split-K", "splitk", "mm", ["splitk4", "splitk16", "splitk64"], [4096, 65536], 1.02),
    ("top-k", "topk", "topk", ["sort"], [1024, 16384], 1.01),
])
def test_replayed_decisions_lose_little_against_the_robust_truth(label, name, reference, candidates, split_points,
                                                                 goal):
    rows = workload(name)
    result = replay_tuning(rows, reference=reference, candidates=candidates, split_points=split_points)
    floor = oracle(rows, result["table"], [reference, *candidates])
    assert result["geomean"] <= goal, (label, result["geomean"], result["losses"])
    assert result["geomean"] <= floor * 1.04, (label, result["geomean"], floor)


def test_the_old_first_declared_rule_loses_what_the_new_rule_keeps():
    # the [129, 513) attention range: flash is declared first, cuDNN is the fastest
    rows = workload("attention")
    result = replay_tuning(rows, reference="math", candidates=ATTENTION, split_points=[128, 512, 2048])
    mid = next(r for r in result["table"].results if r.range.lo == 129)
    assert mid.winner == "cudnn_attention"
    assert result["losses"][256][1] < 1.05


def test_a_kernel_missing_at_some_sizes_loses_only_its_range():
    rows = workload("attention")  # cuDNN has no kernel at seq 1
    result = replay_tuning(rows, reference="math", candidates=ATTENTION, split_points=[128, 512, 2048])
    first = result["table"].results[0]
    assert "cudnn_attention" in first.disqualified
    assert all(r.winner == "cudnn_attention" for r in result["table"].results[1:])


def test_replayed_tuned_times_track_the_robust_truth_where_the_recording_is_steady():
    rows = workload("topk")
    result = replay_tuning(rows, reference="topk", candidates=["sort"], split_points=[1024, 16384])
    timer = result["timer"]
    for r in result["table"].results:
        for i, size in enumerate(r.samples):
            truth = timer.row(size)["truth"]
            for name, times in r.timings.items():
                if math.isfinite(times[i]) and name not in r.dropped:
                    assert times[i] * 1e3 == pytest.approx(truth[name], rel=0.10), (name, size)


def misleading_sizes(rows):
    """Sizes where the raw per-call medians (what any tuner sees) name a fastest candidate that
    the robust truth has over 1.5x slower than the best (seq 1 of the attention recording)."""
    import statistics

    out = set()
    for row in rows:
        raw = {n: statistics.median(v) for n, v in row["raw"].items() if v}
        seen = min(raw, key=raw.__getitem__)
        if row["truth"].get(seen, math.inf) > 1.5 * min(row["truth"].values()):
            out.add(row["size"])
    return out


def test_refined_split_points_lose_little_and_split_where_the_winner_changes():
    # PyTorch's default reference over [1, 129): flash is fastest at seq 1, efficient attention
    # up to 15 % faster at seq 2-64, the default from about 76 on (3 samples per range: 1, 11, 128)
    rows = workload("attention")
    kwargs = dict(reference="default", candidates=ATTENTION, split_points=[128, 512, 2048], samples_per_range=3)
    refined = replay_tuning(rows, **kwargs, refine_splits=True)
    skip = misleading_sizes(rows)
    assert skip == {1}
    geomean, worst = score(refined, skip)
    assert geomean <= 1.02 and worst <= 1.10, (geomean, worst)
    los = [r.range.lo for r in refined["table"].results]
    assert {2049, 513, 129} <= set(los) and any(1 < lo < 129 for lo in los), los
    inner = {r.winner for r in refined["table"].results if r.range.hi is not None and r.range.hi <= 129}
    assert {"efficient_attention", "default"} <= inner


def score(result, skip=()):
    losses = [v for s, (_, v) in result["losses"].items() if s not in skip]
    return math.exp(sum(map(math.log, losses)) / len(losses)), max(losses)


def test_a_wide_range_goes_to_the_candidate_fastest_over_most_of_it():
    # the guessed ranges without refinement: efficient attention wins seq 2-64 of [1, 129) but
    # not its ends (1, 128); each sample weighted by the stretch of log-size it stands for, the
    # range goes to it. (Equal weights over 1, 11 and 128 kept the default there: worst 1.15.)
    rows = workload("attention")
    kwargs = dict(reference="default", candidates=ATTENTION, split_points=[128, 512, 2048])
    for samples in (3, None):
        result = replay_tuning(rows, **kwargs, samples_per_range=samples)
        first = result["table"].results[0]
        assert len(first.samples) == (samples or 5) and first.winner == "efficient_attention", first
        geomean, worst = score(result, misleading_sizes(rows))
        assert geomean <= 1.01 and worst <= 1.06, (samples, geomean, worst)
