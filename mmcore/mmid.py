"""MM-ID slot reconstruction for kernel state built from a capture.

A capture shows who maps which page now, not the history of mappings that
left a large folio's two MM-ID slots and its "maybe mapped shared" bit S
(semantics.md 4) as they are.  The importer adds every MM's mappings in
pid order, one MM at a time (a history that is always possible: the first
MM takes slot 0, the second slot 1, later ones stay untracked).  Which
other states the kernel could be in, and what /proc would then show, is
decided per large folio F by this rule:

1. F is mapped by two or more MMs (captured or stand-in): S = 1 in every
   history.  S = 0 implies that one slot owns all LM mappings
   (folio_sub_large_mapcount() clears S only then, and adding a mapping
   from a second MM sets it), and a slot's count never exceeds its MM's
   own mappings.  Determined.  (With three or more MMs, *which* two hold
   the slots depends on the history; /proc shows nothing of it.)
2. F is mapped by one MM A with LM <= 1: folio_maybe_mapped_shared() is
   false whatever S is.  Determined.
3. F is anonymous, mapped by one MM A, and its first page, mapped by A, is
   AnonExclusive (kpageflags KPF_OWNER_2): S = 0.  The page became
   exclusive in A either when A created F (folio_add_new_anon_rmap(): A
   holds slot 0 with all its mappings) or by CoW reuse (which requires
   S = 0, i.e. A alone and tracked with all mappings); fork would have
   cleared the bit, so no other MM could have joined through this page
   since, and A, tracked with every mapping it has, clears S when the last
   other mapper unmaps.  Determined.
4. Otherwise (A maps F with LM >= 2 and nothing proves A was tracked):
   ambiguous.  S = 0 if no more than two MMs ever mapped F at once
   (the importer's state); S = 1 if at some point three or more did and A
   was the untracked one (e.g. A forked as the third mapper, or a file
   folio that two other processes had mapped first), and they have all
   gone since (semantics.md 0.4).  Best case S = 0, worst case S = 1.

Only configs that decide per folio with the shared bit see the
difference (NO_PAGE_MAPCOUNT's USS, Private_*/Shared_* and pagemap bit 56);
CONFIG_PAGE_MAPCOUNT answers those from per-page mapcounts.
"""
from contextlib import contextmanager

import numpy as np

from .memory import FL_ANON


def classify(mem, heads, nr_mappers, first_page_mapped):
    """Per large folio of `heads` (mapped, LM >= 1): 'shared' (rule 1),
    'single' (rules 2, 3: determined S = 0) or 'ambiguous' (rule 4).
    `nr_mappers`: MMs mapping each folio; `first_page_mapped`: whether its
    only mapper maps page 0."""
    heads = np.asarray(heads, dtype=np.int64)
    lm = mem.large_mapcount[heads]
    anon = (mem.flags[heads] & FL_ANON) != 0
    exclusive = anon & mem.anon_exclusive[heads] & np.asarray(first_page_mapped, dtype=bool)
    out = np.full(len(heads), 'ambiguous', dtype=object)
    out[np.asarray(nr_mappers) >= 2] = 'shared'
    one = np.asarray(nr_mappers) == 1
    out[one & ((lm <= 1) | exclusive)] = 'single'
    return out


@contextmanager
def forced_shared(mem, heads):
    """The worst-case slot history for `heads`: the shared bit set while the
    block runs (folio_maybe_mapped_shared() then says true), restored after."""
    heads = np.asarray(heads, dtype=np.int64)
    saved = mem.maybe_shared[heads].copy()
    mem.maybe_shared[heads] = True
    try:
        yield
    finally:
        mem.maybe_shared[heads] = saved
