"""Folio activity on the LRU lists (mm/swap.c)."""
import numpy as np

from .memory import FL_ACTIVE, FL_LRU, FL_REFERENCED


def folio_mark_accessed(mem, heads):
    """folio_mark_accessed(): referenced first, active on the second time."""
    f = mem.flags[heads]
    ref = (f & FL_REFERENCED) != 0
    act = heads[ref & ((f & FL_ACTIVE) == 0) & ((f & FL_LRU) != 0)]
    mem.flags[act] = (mem.flags[act] & ~np.uint32(FL_REFERENCED)) | FL_ACTIVE
    mem.flags[heads[~ref]] |= FL_REFERENCED
