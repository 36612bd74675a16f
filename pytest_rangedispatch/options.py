"""Command-line option names, the marker's name and its options; shared by the plugin and its tests."""

from __future__ import annotations

PREFIX = "--rangedispatch-"
OPTION_REPORT = PREFIX + "report"
OPTION_CACHE_DIR = PREFIX + "cache-dir"
OPTION_SAVE_BASELINE = PREFIX + "save-baseline"
OPTION_BASELINE = PREFIX + "baseline"
OPTION_FAIL_REGRESSION = PREFIX + "fail-regression"
OPTION_PROFILE = PREFIX + "hypothesis-profile"
OPTION_NO_BENCHMARK = PREFIX + "no-benchmark"
MARKER = "range_autotune"

DEFAULT_BASELINE = ".rangedispatch/baseline.json"
DEFAULT_REPORT = ".rangedispatch/report"
DEFAULT_REGRESSION = "10%"

# Hypothesis profiles registered by the plugin (on first use, so loading stays import-free)
PROFILES = ("rangedispatch-ci", "rangedispatch-gpu", "rangedispatch-thorough")
DEFAULT_PROFILE = "rangedispatch-ci"

# marker keyword options and what they mean; anything else is an error listing these
MARKER_OPTIONS = {
    "example": "one call's inputs: a tuple of args, a dict of kwargs, (args, kwargs), or a callable returning one",
    "dtypes": "floating dtypes to check (default: the example's, float16 and bfloat16)",
    "devices": "devices to check (default: the example's; unavailable ones are skipped)",
    "layouts": "input layouts: 'contiguous', 'transposed', 'sliced' (default: all three)",
    "examples": "Hypothesis examples per range and candidate (default: the profile's)",
    "rtol": "relative tolerance (default: by dtype)",
    "atol": "absolute tolerance, times the reference's RMS (default: by dtype)",
    "sizes": "extra dispatch sizes always checked, in whichever range holds them",
    "max_size": "largest size checked in an unbounded last range (default: the op's range_upper_bound, the largest "
                "recorded size, else max(4096, 4*lo))",
    "compiled": "True adds a case per range that runs every candidate and the op under torch.compile (slow on a CPU)",
    "cuda_graphs": "a case per range that captures every candidate and the op in a CUDA graph and replays it on new "
                   "inputs (default: on when the example is on CUDA; False turns it off)",
    "reference": "a float64 reference function (default: the op's own function, in the input dtype)",
    "benchmark": "False turns the per-range benchmark check off",
    "make_inputs": "for a MultiKernel: make_inputs(sizes) -> the call's args at sizes like a hint (default: the MultiKernel's own)",
    "grad": "'auto' (default): where the reference has a gradient on the example, each case also compares every "
            "floating input's gradient with the reference's (random cotangent); True always (the dispatched op too); "
            "False never",
    "stale_tolerance": "how much slower than the fastest the table's winner may be before it is stale (default 0.05)",
}
