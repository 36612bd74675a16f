"""Rank-consistent tables: two processes with the gloo backend (see dist_worker.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")

WORKER = Path(__file__).with_name("dist_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Both ranks' findings: every scenario of dist_worker.py, run once."""
    tmp = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), "2", str(tmp / "store"), str(tmp / f"out{r}.json"),
                               str(tmp / "cache")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r][-3000:]}"
    return [json.loads((tmp / f"out{r}.json").read_text()) for r in range(2)]


def test_broadcast_gives_every_rank_rank_0s_table_and_only_rank_0_times(ranks):
    for kind in ("1d", "grid"):
        zero, one = ranks[0][f"{kind}-broadcast"], ranks[1][f"{kind}-broadcast"]
        assert zero["winners"] == one["winners"] and set(zero["winners"]) == {"a"}
        assert zero["sizes"] and one["sizes"] == []


def test_split_shares_the_ranges_out_and_every_rank_ends_with_the_same_table(ranks):
    zero, one = ranks[0]["1d-split"], ranks[1]["1d-split"]
    assert zero["winners"] == one["winners"] == ["a", "b", "a", "b"]  # ranges dealt round-robin
    assert zero["sizes"] and one["sizes"] and not set(zero["sizes"]) & set(one["sizes"])
    zero, one = ranks[0]["grid-split"], ranks[1]["grid-split"]
    assert zero["winners"] == one["winners"] == ["a", "b", "a", "b"]


def test_without_collective_tuning_the_ranks_would_disagree(ranks):
    for kind in ("1d", "grid"):
        assert set(ranks[0][f"{kind}-off"]["winners"]) == {"a"} and set(ranks[1][f"{kind}-off"]["winners"]) == {"b"}


def test_ranks_with_different_candidates_both_fail_loudly(ranks):
    for rank in ranks:
        message = rank["disagree"]
        assert "the ranks disagree" in message and "rank 1 candidates" in message and "'c'" in message


def test_rank_0s_cached_table_wins_over_another_ranks_cache(ranks):
    assert ranks[0]["cache"]["alone"] != ranks[1]["cache"]["alone"]
    for rank in ranks:
        assert rank["cache"]["winners"] == ranks[0]["cache"]["alone"] and rank["cache"]["benchmarked"] == 0


def test_split_tuning_keeps_the_pieces_of_a_refined_range(ranks):
    table = ranks[0]["refine-split"]
    assert ranks[1]["refine-split"] == table
    assert [lo for lo, _, _ in table][:3] == [1, 9, 65] and table[-1][:2] == [513, None]
    inside = [row for row in table if 65 <= row[0] and row[1] is not None and row[1] <= 513]
    assert [w for *_, w in inside] == ["a", "b"] and 182 < inside[1][0] <= 512


def test_a_rank_that_fails_while_tuning_makes_every_rank_raise(ranks):
    """Split mode, rank 1 fails; broadcast mode, rank 0 (the one that tunes) fails: both ranks
    raise a TuningError naming the failed rank and its error, and the group stays usable (the
    cache scenario after it runs its collectives)."""
    for mode, failing in (("split", 1), ("broadcast", 0)):
        for rank in ranks:
            message = rank[f"fail-{mode}"]
            assert "collective tuning failed" in message, (mode, message)
            assert f"rank {failing}: RuntimeError: device lost while timing" in message, (mode, message)
    assert all("cache" in rank for rank in ranks)
