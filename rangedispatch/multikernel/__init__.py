"""Multi-kernel dispatch: equivalent variants, each tuned at a size hint, chosen per shape.

Two policies, switchable at any time:

* ``"benchmark"``: the first call with a new shape times every variant on the real inputs,
  checks that they agree with the first variant, caches the fastest for that shape and calls
  it directly afterwards;
* ``"nearest"``: no timing at run time; the variant whose hint is closest to the call's sizes
  (L1 distance in log2 space) is chosen, and cached per shape too.

Hints are sequences of ints compared with the call's *sizes*: by default every dimension of
every tensor argument in order, or the first tensor's dimensions when those have as many
numbers as the hints; pass ``sizes=lambda a, b: (a.shape[0], b.shape[1])`` to compare
other numbers. Dimensions on which all hints agree do not count in the distance. A shape that
equals a variant's hint exactly picks that variant without timing under either policy.
A variant without a hint (``hint=None``, e.g. a library kernel) is timed by ``benchmark`` but
never chosen by ``nearest``.

Variant sources: plain callables (:class:`Variant`), a function compiled once per hint with
``torch.compile`` and primed at the hint (:meth:`MultiKernel.compiled`), and a kernel with
launch configs, the best config per hint chosen by timing at the hint
(:meth:`MultiKernel.tuned_configs`). Decisions persist in the tuning cache (or any file
with :meth:`MultiKernel.save` / :meth:`MultiKernel.load`), written atomically.

Inside ``torch.compile`` and ``torch.export`` the ``nearest`` rule is traced as conditionals
on the symbolic sizes (one graph for every shape). ``in_graph="inline"`` traces the variants'
code into the graph, where the compiler may fuse it with its neighbours but compiles it for
symbolic shapes (a per-hint compile's specialisation is not kept). ``in_graph="opaque"`` calls
each region's variant through one custom op (``torch.ops.rangedispatch_mk.<name>``) instead,
so it runs exactly as it does eagerly: the per-hint compiles keep their specialisation, and variants the compiler cannot
trace (host logic, extensions without fake kernels) work. The default, ``"auto"``, is opaque
under ``torch.compile`` when a hinted variant is a compile (:meth:`MultiKernel.compiled`) and
inline otherwise, and always inline under ``torch.export``.
"""

from __future__ import annotations

from .builders import inductor_multi_kernel
from .core import MultiKernel
from .variants import Variant, log2_distance

__all__ = ["MultiKernel", "Variant", "inductor_multi_kernel", "log2_distance"]
