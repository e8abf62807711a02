"""The step history of the MM-ID slots: for each folio, when an MM took
or gave up a slot, when the "maybe mapped shared" bit changed, and when an
MM mapped it without getting a slot (untracked).  Recorded by rmap.py as
it updates the slots (only folios whose slot state changed, or whose new
mapper found both slots taken), read by `mmemu explain`."""
from dataclasses import dataclass

import numpy as np


@dataclass
class SlotEvent:
    step: int                 # scenario step index (0: before the first step)
    op: str                   # 'new' (folio_set_large_mapcount), 'add', 'sub'
    mm_id: int
    pid: int                  # the pid owning mm_id at that step, or -1
    ids: tuple                # (mm0_id, mm1_id) after
    counts: tuple             # (mm0_mapcount, mm1_mapcount) after
    shared: bool              # the shared bit after
    untracked: bool           # the MM mapped it but holds no slot


class SlotHistory:
    def __init__(self):
        self.step = 0
        self._batches = []    # (step, op, mm_id, heads, ids, counts, shared, untracked)
        self._owners = {}     # step -> {mm_id: pid}

    def record(self, op, mm_id, heads, ids, counts, shared, untracked):
        if len(heads):
            self._batches.append((self.step, op, int(mm_id), heads.copy(), ids.copy(),
                                  counts.copy(), shared.copy(), untracked.copy()))

    def set_owners(self, step, owners):
        self._owners.setdefault(step, {}).update(owners)

    def events(self, head):
        """The SlotEvents of the folio at `head` since it was last
        allocated as a large folio, oldest first."""
        out = []
        for step, op, mm_id, heads, ids, counts, shared, untracked in self._batches:
            hit = np.flatnonzero(heads == head)
            if len(hit) == 0:
                continue
            i = hit[0]
            if op == 'new':
                out = []
            out.append(SlotEvent(step, op, mm_id, self._owners.get(step, {}).get(mm_id, -1),
                                 (int(ids[i, 0]), int(ids[i, 1])),
                                 (int(counts[i, 0]), int(counts[i, 1])), bool(shared[i]),
                                 bool(untracked[i])))
        return out
