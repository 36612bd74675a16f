"""The range-dispatched op: one dispatch dimension (:class:`RangeDispatchOp`) or a grid of
several (:class:`~rangedispatch.op.grid.GridDispatchOp`), and tables every rank agrees on."""

from .core import RangeDispatchOp

__all__ = ["RangeDispatchOp"]
