"""Where an op's tables come from: tuned on the first call (or ``tune``), loaded from the cache or a
file, checked to fit the op's ranges, saved."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .. import compat
from ..decide import cache as cache_mod
from ..decide.config import DispatchSpec, Plan
from ..decide.discover import refine_range, tune_auto
from ..decide.environment import Environment
from ..decide.inputs import CallTemplate, InputFactory, TensorSpec
from ..decide.profile import SizeProfile, profile_path
from ..decide.ranges import Range
from ..decide.table import TuningTable
from ..decide.spotcheck import SPOT_SHARE, Provenance, SpotCheck, spot_check
from ..decide.tuner import log_summary, tune_plan
from ..errors import ConfigError, TableError
from ..measure.timing import default_benchmarker
from . import distributed

log = logging.getLogger("rangedispatch")


class TablesMixin:
    """Tuning, caching, loading and saving an op's tables (a part of :class:`RangeDispatchOp`)."""

    # --- tuning ----------------------------------------------------------------------
    def tune(self, *args: Any, force: bool = False, profile: Any = None, **kwargs: Any) -> TuningTable:
        """Tune on example inputs (other dims, dtypes and devices are taken from them).

        Args:
            *args, **kwargs: an example call of the op.
            force: re-benchmark even if a valid cached table exists.
            profile: recorded sizes (a :class:`SizeProfile` or the path of a saved one):
                samples and automatic split points go where the traffic is.
        """
        if profile is not None:
            self.profile = profile if isinstance(profile, SizeProfile) else SizeProfile.load(profile)
        with self._lock:
            return self._setup(args, kwargs, force=force)

    def _setup(self, args: Sequence[Any], kwargs: Mapping[str, Any], *, force: bool) -> TuningTable:
        table, template = self._tune_table(args, kwargs, force=force)
        self._template = template
        self._tensor_checks = []
        self._other_checks.pop(table.signature, None)
        self._learn_guard(args, kwargs, template, self._tensor_checks)
        self._templates[table.signature] = template
        self._install(table)
        return table

    def _tune_table(self, args: Sequence[Any], kwargs: Mapping[str, Any], *,
                    force: bool) -> tuple[TuningTable, CallTemplate]:
        """The table for this call's signature: from the cache, or tuned (and cached)."""
        import torch

        template = CallTemplate.from_call(self.reference_fn, args, kwargs)
        if self._config_generator is not None:
            self._plan = self._generate_plan(args, kwargs)
        if self._plan is None:
            raise ConfigError(
                f"{self.name}: Expected at least one candidate before the first call but none is "
                "registered; add one with @op.register_impl or pass configs=[...]"
            )
        template.check(self._plan.dispatch)
        device = _device_of(template, self._plan.dispatch)
        environment = Environment.current(device)
        factory = InputFactory(template, self._plan.dispatch, self.input_gen_fns, op_name=self.name)
        fingerprints = {self._ref.name: self._ref.fingerprint,
                        **{c.name: c.fingerprint for c in self._plan.all_candidates}}
        signature = template.signature(self._plan.dispatch)
        path = self._cache_path(environment, fingerprints, signature)
        group = distributed.group_for(self)
        if group is not None:  # every rank must be about to tune the same thing
            distributed.agree(self.name, {
                "candidates": fingerprints, "ranges": [str(r) for r in self._plan.ranges],
                "dispatch": str(self._plan.dispatch), "signature": signature,
                "environment": environment.to_json(), "settings": self.settings.to_json(),
                "mode": self.distributed, "force": force}, group)
        mode = cache_mod.cache_mode(self.use_cache)
        why = ""
        if not force:
            cached = cache_mod.load_cached(path, environment=environment, candidates=fingerprints,
                                           signature=signature, table_type=self._table_type)
            if cached is not None and not self._fits(cached):
                cached = None
            check = None
            if cached is not None and mode == cache_mod.VERIFY:
                check = self._spot_check(cached, factory, device)
                if not check.passed:
                    why = "the cached table failed its spot check: " + "; ".join(check.problems[:3])
                    warnings.warn(f"{self.name}: re-tuning input signature {signature}: {why} "
                                  f"(cache {str(path)!r}; RANGEDISPATCH_CACHE=trust skips the check)",
                                  RuntimeWarning, stacklevel=4)
                    cached = None
            if group is not None:  # rank 0's cache decides for every rank
                cached = distributed.from_rank0(cached, group)
            if cached is not None:
                log.info("%s: loaded tuning table from %s (%s)", self.name, path,
                         "spot-checked, no tuning" if check is not None else "trusted, no benchmarking")
                log_summary(cached)
                self._provenance[signature] = Provenance("cache", str(path), "verified" if check else "trusted",
                                                         cached.created, check)
                return cached, template
            if not why and path is not None:
                why = self._what_changed(path, signature)
        benchmarker = self._benchmarker_for(device)
        common = dict(op_name=self.name, plan=self._plan, reference=self._ref, factory=factory,
                      benchmarker=benchmarker, settings=self.settings, environment=environment,
                      device_type=getattr(device, "type", str(device)), profile=self.profile)
        started = time.perf_counter()
        with compat.no_dispatch_modes(), torch.no_grad():  # real tensors while tracing
            table = self._run_tuner(common)
        table = dataclasses.replace(table, tuning_s=time.perf_counter() - started)
        saved = None
        if path is not None:
            try:
                saved = table.save(path)
            except OSError as exc:
                warnings.warn(f"{self.name}: could not write tuning cache {str(path)!r}: {exc}",
                              RuntimeWarning, stacklevel=3)
        self._provenance[signature] = Provenance("tuned", str(saved) if saved else None, "fresh", table.created,
                                                 why="forced" if force else why)
        return table, template

    def _benchmarker_for(self, device: Any) -> Any:
        return self.benchmarker or default_benchmarker(getattr(device, "type", str(device)),
                                                       cuda_graphs=self.settings.cuda_graphs,
                                                       objective=self.settings.objective)

    def _spot_check(self, table: TuningTable, factory: InputFactory, device: Any) -> SpotCheck:
        """The load-time check of ``table`` (see :mod:`~rangedispatch.decide.spotcheck`)."""
        import torch

        cuda = getattr(device, "type", str(device)) == "cuda"
        with compat.no_dispatch_modes(), torch.no_grad():
            check = spot_check(table, candidates=self._by_name, reference=self._ref, factory=factory,
                               benchmarker=self._benchmarker_for(device), rtol=self.settings.rtol,
                               atol=self.settings.atol, check=self.settings.check,
                               sync=torch.cuda.synchronize if cuda else None,
                               budget_s=SPOT_SHARE * table.tuning_s if table.tuning_s > 0 else None)
        spent = ", ".join(f"{name} {s * 1e3:.1f}" for name, s in check.phases if s > 0)
        log.info("%s: spot check of %d range(s) in %.1f ms (%s): %s", self.name, check.checked,
                 check.seconds * 1e3, spent or "-", "passed" if check.passed else "; ".join(check.problems))
        return check

    def _what_changed(self, path: Path, signature: str) -> str:
        """Why no cached table fits: what changed in the candidates' code since the op's newest
        other table for this signature in the cache directory (logged; ``""`` if none)."""
        changes = []
        for other in sorted(path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.json"),
                            key=lambda p: p.stat().st_mtime, reverse=True)[:4]:
            try:
                old = self._table_type.load(other)
            except (TableError, OSError):
                continue
            if old.op == self.name and old.signature == signature and old.code:
                changes = old.code_changes(self._code_parts())
                if changes:
                    break
        if not changes:
            return "no cached table"
        why = "the code changed since the last table: " + ", ".join(changes[:6])
        log.info("%s: re-tuning, %s", self.name, why)
        return why

    def _code_parts(self) -> dict[str, tuple[str, ...]]:
        """Every candidate's fingerprint parts, by name (for :meth:`TuningTable.code_changes`)."""
        return {n: c.code_parts for n, c in self._by_name.items()}

    @property
    def provenance(self) -> Provenance | None:
        """Where the table in force came from: tuned now or loaded (cache or file), verified
        by the spot check or trusted, when, and from which file."""
        return self._provenance.get(self._table.signature) if self._table is not None else None

    _table_type: type = TuningTable

    def _run_tuner(self, common: dict[str, Any]) -> TuningTable:
        """Tune with ``common`` (the tuner's arguments), collectively under torch.distributed."""
        if self.auto is not None:
            return distributed.tune_consistently(self, common, functools.partial(tune_auto, auto=self.auto))
        return distributed.tune_consistently(self, common, functools.partial(tune_plan, refine=refine_range))

    def _generate_plan(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Plan:
        import inspect

        import torch

        bound = inspect.signature(self.reference_fn).bind(*args, **kwargs).arguments
        tensors = {k: v for k, v in bound.items() if isinstance(v, torch.Tensor)}
        assert self._config_generator is not None
        configs = list(self._config_generator(tensors))
        return self._build_plan(configs)

    def _cache_path(self, environment: Environment, fingerprints: Mapping[str, str], signature: str) -> Path | None:
        if cache_mod.cache_mode(self.use_cache) == cache_mod.OFF:
            return None
        assert self._plan is not None
        key = cache_mod.cache_key({
            "op": self.name,
            "reference": self._ref.fingerprint,
            "candidates": fingerprints,
            "ranges": {str(r): sorted(c.name for c in cs) for r, cs in self._plan.candidates.items()},
            "dispatch": repr(getattr(self._plan.dispatch, "axes", self._plan.dispatch)),  # with ties and bounds
            "signature": signature,
            "environment": environment.to_json(),
            "settings": self.settings.to_json(),
            "input_gen_fns": {k: _fn_id(v) for k, v in sorted(self.input_gen_fns.items())},
            "auto": self.auto.to_json() if self.auto is not None else None,
            "profile": sorted(self.profile.counts.items()) if self.profile is not None and self.profile.counts else None,
        })
        return cache_mod.cache_path(self.name, key)

    def _fits(self, table: TuningTable) -> bool:
        assert self._plan is not None
        ranges = [r.range for r in table.results]
        ranges_ok = (self.auto is not None or ranges == list(self._plan.ranges)
                     or (self.settings.refine and _refines(ranges, self._plan.ranges)))
        names_ok = all(r.winner in self._by_name for r in table.results)
        return ranges_ok and names_ok

    def record_sizes(self, on: bool = True) -> SizeProfile:
        """Count the dispatch size of every eager call in ``op.profile`` (a compact histogram,
        one dict update per call); ``op.save_table(path)`` saves it next to the table."""
        with self._lock:
            if self.profile is None:
                self.profile = SizeProfile()
            self._recording = bool(on) and self.dispatch is not None
            if self._table is not None:
                self._specialise(*self._route)
        return self.profile

    # --- tables ----------------------------------------------------------------------
    def save_table(self, path: str | Path) -> Path:
        """Write the table in force to ``path`` (atomically), and the recorded sizes, if any,
        to ``<path>.sizes.json`` beside it."""
        if self._table is None:
            raise TableError(f"{self.name}: Expected a tuned op but it has no table yet; call it or .tune() first")
        if self.profile is not None and self.profile.counts:
            self.profile.save(profile_path(path))
        return self._table.save(path)

    def load_table(self, path: str | Path, *, allow_other_environment: bool = False,
                   trust: bool = False) -> TuningTable:
        """Use a saved table instead of tuning; it must match the op's candidates and ranges.

        Unless ``trust``, the table is spot-checked (see
        :mod:`~rangedispatch.decide.spotcheck`) at once if the op has seen a call of its
        signature, else at the first eager call of it; a table that fails is dropped with a
        warning and that signature is re-tuned.

        Args:
            path: a file written by :meth:`save_table` or ``rangedispatch tune``.
            allow_other_environment: accept a table timed on another device or library
                version (a warning is still issued).
            trust: use the table unchecked, even if the candidates' code changed since it was
                tuned (a warning names what changed).
        """
        table = self._table_type.load(path)
        if self._plan is None:
            raise TableError(f"{self.name}: Expected candidates before loading a table; register them first")
        fingerprints = {self._ref.name: self._ref.fingerprint,
                        **{c.name: c.fingerprint for c in self._plan.all_candidates}}
        problems = cache_mod.mismatch(table, environment=None, candidates=fingerprints, signature=None)
        if problems and trust and self._fits(table):
            changed = table.code_changes(self._code_parts()) or problems
            warnings.warn(f"{self.name}: using table {str(path)!r} with trust=True although the code changed "
                          f"since it was tuned ({', '.join(changed[:6])})", RuntimeWarning, stacklevel=2)
        elif problems or not self._fits(table):
            changed = table.code_changes(self._code_parts()) if problems else []
            raise TableError(
                f"{self.name}: table {str(path)!r} does not match this op "
                f"({'; '.join(changed[:6] or problems) or 'different ranges'}); re-tune with op.tune(...) and "
                "save it again, or pass trust=True to use it anyway"
            )
        if self._template is not None:
            device = _device_of(self._template, self._plan.dispatch)
            diffs = table.environment.differences(Environment.current(device))
            if diffs:
                if not allow_other_environment:
                    raise TableError(
                        f"{self.name}: table {str(path)!r} was tuned elsewhere ({'; '.join(diffs)}); "
                        "pass allow_other_environment=True to use it anyway"
                    )
                warnings.warn(f"{self.name}: using a table tuned elsewhere ({'; '.join(diffs)})",
                              RuntimeWarning, stacklevel=2)
        side = profile_path(path)
        if side.exists():
            self.profile = SizeProfile.load(side)
        with self._lock:
            template = self._templates.get(table.signature)
            if not trust and template is not None:
                check = self._check_loaded(table, template, str(path))
                if not check.passed:
                    self.reset()
                    return table
            self._install(table)
            if trust:
                self._provenance[table.signature] = Provenance("file", str(path), "trusted", table.created)
            elif template is None:
                self._provenance[table.signature] = Provenance("file", str(path), "pending", table.created)
        return table

    def _check_loaded(self, table: TuningTable, template: CallTemplate, path: str) -> SpotCheck:
        """Spot-check a table loaded from a file against ``template`` (the op's example call
        of its signature); warn when it fails."""
        assert self._plan is not None
        factory = InputFactory(template, self._plan.dispatch, self.input_gen_fns, op_name=self.name)
        check = self._spot_check(table, factory, _device_of(template, self._plan.dispatch))
        if check.passed:
            self._provenance[table.signature] = Provenance("file", path, "verified", table.created, check)
        else:
            warnings.warn(f"{self.name}: table {path!r} failed its spot check ({'; '.join(check.problems[:3])}); "
                          "dropped, input signature " f"{table.signature} re-tunes "
                          "(load_table(..., trust=True) skips the check)", RuntimeWarning, stacklevel=4)
        return check


def _refines(ranges: Sequence[Range], given: Sequence[Range]) -> bool:
    """Whether ``ranges`` split ``given`` (contiguous, same ends, every given bound kept)."""
    if not ranges or not given or ranges[0].lo != given[0].lo or ranges[-1].hi != given[-1].hi:
        return False
    if any(a.hi != b.lo for a, b in zip(ranges, ranges[1:])):
        return False
    bounds = {r.lo for r in ranges}
    return all(g.lo in bounds for g in given)


def _device_of(template: CallTemplate, spec: DispatchSpec | None) -> Any:
    if spec is not None:
        value = template.get(spec.tensor)
        if isinstance(value, TensorSpec):
            return value.device
    for value in list(template.args) + list(template.kwargs.values()):
        if isinstance(value, TensorSpec):
            return value.device
    import torch

    return torch.device("cpu")


def _fn_id(fn: Callable[..., Any]) -> str:
    from ..decide.candidates import source_hash

    return f"{getattr(fn, '__qualname__', type(fn).__name__)}:{source_hash(fn)}"
