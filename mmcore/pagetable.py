"""The page tables of one address space below the PMD level.

As in the kernel, each 2 MiB block of the address space (a PMD index,
vpn >> 9) is either empty (pmd_none), a PMD leaf (one entry: the first
PFN of a PMD-sized folio and the entry's bits, PTE_PMD set), or a PTE
table of 512 entries, allocated on first use and kept until freed
(free_pgtables, CONFIG_PT_RECLAIM).  An untouched range costs nothing;
work is proportional to the PMDs and PTE tables present.

The blocks with an entry are kept as sorted arrays (PMD index, kind,
value); PTE tables are rows of a pool of 512-entry arrays.  Addresses
here are virtual page numbers (vpn); VMA-relative helpers live in mm.py.
"""
import numpy as np

from .memory import sorted_unique

PTRS_PER_PTE = 512
PTE_SHIFT = 9
PTE_PMD = 16           # mirrored from mm.py (this module imports nothing of it)

LEAF = 1
TABLE = 2

_SLOTS = np.arange(PTRS_PER_PTE, dtype=np.int64)


class PageTable:
    """PMD-level entries of one mm: PMD leaves and PTE tables."""

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.int64)      # sorted PMD indices with an entry
        self.kind = np.zeros(0, dtype=np.int8)       # LEAF or TABLE
        self.val = np.zeros(0, dtype=np.int64)       # leaf: first PFN; table: pool row
        self.lbits = np.zeros(0, dtype=np.uint8)     # leaf: entry bits (PTE_PMD set)
        self.tpfn = np.zeros((0, PTRS_PER_PTE), dtype=np.int64)
        self.tbits = np.zeros((0, PTRS_PER_PTE), dtype=np.uint8)
        self.free_rows = []

    # --- block directory ------------------------------------------------------
    def _find(self, keys):
        keys = np.asarray(keys, dtype=np.int64)
        pos = np.searchsorted(self.keys, keys)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == keys[found]
        return pos, found

    def _lookup(self, vpns):
        """_find() of the blocks of vpns; one search per run of equal
        blocks when vpns come in address order."""
        keys = vpns >> PTE_SHIFT
        if len(keys) > 64 and (keys[1:] >= keys[:-1]).all():
            first = np.empty(len(keys), dtype=bool)
            first[0] = True
            np.not_equal(keys[1:], keys[:-1], out=first[1:])
            starts = np.flatnonzero(first)
            counts = np.diff(np.append(starts, len(keys)))
            pos, found = self._find(keys[starts])
            return np.repeat(pos, counts), np.repeat(found, counts)
        return self._find(keys)

    def _span(self, vlo, vhi):
        """Positions [a, b) of the blocks meeting vpns [vlo, vhi)."""
        if vhi <= vlo:
            return 0, 0
        a = int(np.searchsorted(self.keys, vlo >> PTE_SHIFT))
        b = int(np.searchsorted(self.keys, ((vhi - 1) >> PTE_SHIFT) + 1))
        return a, b

    def _alloc_rows(self, m):
        take = [self.free_rows.pop() for _ in range(min(m, len(self.free_rows)))]
        need = m - len(take)
        if need:
            old = len(self.tpfn)
            used = old - len(self.free_rows)
            cap = max(old * 2, old + need, 8)
            if used + need > cap:
                cap = used + need
            grow = cap - old
            self.tpfn = np.concatenate([self.tpfn, np.full((grow, PTRS_PER_PTE), -1, np.int64)])
            self.tbits = np.concatenate([self.tbits, np.zeros((grow, PTRS_PER_PTE), np.uint8)])
            fresh = list(range(old, cap))
            take += fresh[:need]
            self.free_rows.extend(reversed(fresh[need:]))
        rows = np.array(take, dtype=np.int64)
        self.tpfn[rows] = -1
        self.tbits[rows] = 0
        return rows

    def _insert(self, keys, kind, val, lbits):
        """Adds blocks that have no entry yet (keys sorted, unique)."""
        if len(keys) == 0:
            return
        pos = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, pos, keys)
        self.kind = np.insert(self.kind, pos, kind)
        self.val = np.insert(self.val, pos, val)
        self.lbits = np.insert(self.lbits, pos, lbits)

    def _remove(self, pos):
        if len(pos) == 0:
            return
        tab = pos[self.kind[pos] == TABLE]
        self.free_rows.extend(int(r) for r in self.val[tab])
        keep = np.ones(len(self.keys), dtype=bool)
        keep[pos] = False
        self.keys, self.kind = self.keys[keep], self.kind[keep]
        self.val, self.lbits = self.val[keep], self.lbits[keep]

    # --- PTE tables ------------------------------------------------------------
    def alloc_tables(self, keys):
        """pte_alloc() for the blocks `keys` that have no entry."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
            keys = sorted_unique(keys)
        pos, found = self._find(keys)
        if (self.kind[pos[found]] == LEAF).any():
            raise AssertionError('PTE table wanted where a PMD leaf is')
        new = keys[~found]
        if len(new):
            rows = self._alloc_rows(len(new))
            self._insert(new, TABLE, rows, 0)

    def table_keys(self):
        return self.keys[self.kind == TABLE]

    def leaf_keys(self):
        return self.keys[self.kind == LEAF]

    def free_tables(self, keys):
        """Frees the PTE tables of blocks `keys` (their entries go with them)."""
        pos, found = self._find(keys)
        pos = pos[found]
        self._remove(pos[self.kind[pos] == TABLE])

    def free_empty_tables(self, vlo, vhi):
        """Frees the PTE tables meeting [vlo, vhi) that map nothing."""
        a, b = self._span(vlo, vhi)
        pos = np.arange(a, b)
        pos = pos[self.kind[pos] == TABLE]
        if len(pos):
            empty = ~(self.tpfn[self.val[pos]] >= 0).any(axis=1)
            self._remove(pos[empty])

    def free_tables_outside(self, starts, ends):
        """free_pgtables(): tables of blocks no range [start, end) (vpns,
        sorted, disjoint) reaches any more."""
        pos = np.flatnonzero(self.kind == TABLE)
        if len(pos) == 0:
            return
        keys = self.keys[pos]
        kstart = np.asarray(starts, dtype=np.int64) >> PTE_SHIFT
        kend = ((np.asarray(ends, dtype=np.int64) - 1) >> PTE_SHIFT) + 1
        j = np.searchsorted(kend, keys, side='right')
        live = (j < len(kstart))
        live[live] = kstart[j[live]] <= keys[live]
        self._remove(pos[~live])

    def clear_all(self):
        self.__init__()

    # --- reading entries ---------------------------------------------------------
    def get(self, vlo, vhi):
        """(pfn, bits) of every vpn in [vlo, vhi): -1/0 where none; a PMD
        leaf shows as its 512 pages with PTE_PMD set."""
        n = max(vhi - vlo, 0)
        pfn = np.full(n, -1, dtype=np.int64)
        bits = np.zeros(n, dtype=np.uint8)
        a, b = self._span(vlo, vhi)
        if a == b:
            return pfn, bits
        klo = vlo >> PTE_SHIFT
        nblk = ((vhi - 1) >> PTE_SHIFT) + 1 - klo
        if nblk == 1:
            off = vlo & (PTRS_PER_PTE - 1)
            val = int(self.val[a])
            if self.kind[a] == TABLE:
                return self.tpfn[val, off:off + n].copy(), self.tbits[val, off:off + n].copy()
            bits[:] = self.lbits[a]
            return np.arange(val + off, val + off + n, dtype=np.int64), bits
        keys, kind, val = self.keys[a:b], self.kind[a:b], self.val[a:b]
        bp = np.full((nblk, PTRS_PER_PTE), -1, dtype=np.int64)
        bb = np.zeros((nblk, PTRS_PER_PTE), dtype=np.uint8)
        t = kind == TABLE
        bp[keys[t] - klo] = self.tpfn[val[t]]
        bb[keys[t] - klo] = self.tbits[val[t]]
        lf = ~t
        bp[keys[lf] - klo] = val[lf][:, None] + _SLOTS
        bb[keys[lf] - klo] = self.lbits[a:b][lf][:, None]
        off = vlo - (klo << PTE_SHIFT)
        return bp.ravel()[off:off + n].copy(), bb.ravel()[off:off + n].copy()

    def get_at(self, vpns):
        vpns = np.asarray(vpns, dtype=np.int64)
        pfn = np.full(len(vpns), -1, dtype=np.int64)
        bits = np.zeros(len(vpns), dtype=np.uint8)
        if len(vpns) == 0 or len(self.keys) == 0:
            return pfn, bits
        pos, found = self._lookup(vpns)
        slot = vpns & (PTRS_PER_PTE - 1)
        t = found & (self.kind[np.minimum(pos, len(self.keys) - 1)] == TABLE)
        lf = found & ~t
        rows = self.val[pos[t]]
        pfn[t] = self.tpfn[rows, slot[t]]
        bits[t] = self.tbits[rows, slot[t]]
        pfn[lf] = self.val[pos[lf]] + slot[lf]
        bits[lf] = self.lbits[pos[lf]]
        return pfn, bits

    def present_ptes(self, vlo, vhi):
        """(vpns, pfn, bits) of the present entries of PTE tables in
        [vlo, vhi), in address order."""
        a, b = self._span(vlo, vhi)
        pos = np.arange(a, b)
        pos = pos[self.kind[pos] == TABLE]
        if len(pos) == 0:
            z = np.zeros(0, dtype=np.int64)
            return z, z.copy(), np.zeros(0, dtype=np.uint8)
        rows = self.val[pos]
        tp = self.tpfn[rows]
        m = tp >= 0
        vp = (self.keys[pos] << PTE_SHIFT)[:, None] + _SLOTS
        m &= (vp >= vlo) & (vp < vhi)
        return vp[m], tp[m], self.tbits[rows][m]

    def tables(self, vlo, vhi):
        """(PMD indices, pfn rows, bits rows) of the PTE tables meeting
        [vlo, vhi): whole 512-entry tables (copies), -1/0 where none."""
        a, b = self._span(vlo, vhi)
        t = self.kind[a:b] == TABLE
        rows = self.val[a:b][t]
        return self.keys[a:b][t], self.tpfn[rows], self.tbits[rows]

    def leaves(self, vlo, vhi):
        """(PMD indices, first PFNs, bits) of the PMD leaves meeting [vlo, vhi)."""
        a, b = self._span(vlo, vhi)
        lf = self.kind[a:b] == LEAF
        return self.keys[a:b][lf], self.val[a:b][lf], self.lbits[a:b][lf]

    def has_table(self, keys):
        pos, found = self._find(keys)
        found[found] = self.kind[pos[found]] == TABLE
        return found

    def has_entry(self, keys):
        """Per PMD index: not pmd_none()."""
        return self._find(keys)[1]

    # --- writing entries ------------------------------------------------------------
    def set_at(self, vpns, pfn, bits):
        """Writes PTE entries (never into a PMD leaf); a PTE table is
        allocated for a block that gets a present entry and has none."""
        vpns = np.asarray(vpns, dtype=np.int64)
        if len(vpns) == 0:
            return
        pfn = np.broadcast_to(np.asarray(pfn, dtype=np.int64), vpns.shape)
        bits = np.broadcast_to(np.asarray(bits, dtype=np.uint8), vpns.shape)
        if len(vpns) >= PTRS_PER_PTE and vpns[-1] - vpns[0] + 1 == len(vpns) and \
                (np.diff(vpns) == 1).all():
            return self._set_range(int(vpns[0]), pfn, bits)
        pos, found = self._lookup(vpns)
        if len(self.keys) and (found & (self.kind[np.minimum(pos, len(self.keys) - 1)] == LEAF)).any():
            raise AssertionError('PTE write into a PMD leaf')
        need = ~found & (pfn >= 0)
        if need.any():
            self.alloc_tables(vpns[need] >> PTE_SHIFT)
            pos, found = self._lookup(vpns)
        rows = self.val[pos[found]]
        slot = vpns[found] & (PTRS_PER_PTE - 1)
        self.tpfn[rows, slot] = pfn[found]
        self.tbits[rows, slot] = bits[found]

    def _set_range(self, vlo, pfn, bits):
        """set_at() of the consecutive vpns from vlo, table by table."""
        vhi = vlo + len(pfn)
        klo, khi = vlo >> PTE_SHIFT, ((vhi - 1) >> PTE_SHIFT) + 1
        keys = np.arange(klo, khi, dtype=np.int64)
        pos, found = self._find(keys)
        if (self.kind[pos[found]] == LEAF).any():
            raise AssertionError('PTE write into a PMD leaf')
        if not found.all():
            # a table for every block that gets a present entry
            off = (keys << PTE_SHIFT) - vlo
            a = np.maximum(off, 0)
            b = np.minimum(off + PTRS_PER_PTE, len(pfn))
            pres = np.concatenate([[0], np.cumsum(pfn >= 0)])
            need = ~found & (pres[b] > pres[a])
            if need.any():
                self.alloc_tables(keys[need])
                pos, found = self._find(keys)
        rows = np.full(len(keys), -1, dtype=np.int64)
        rows[found] = self.val[pos[found]]
        head = (PTRS_PER_PTE - (vlo & (PTRS_PER_PTE - 1))) % PTRS_PER_PTE
        head = min(head, len(pfn))
        if head:
            if rows[0] >= 0:
                s0 = vlo & (PTRS_PER_PTE - 1)
                self.tpfn[rows[0], s0:s0 + head] = pfn[:head]
                self.tbits[rows[0], s0:s0 + head] = bits[:head]
            rows = rows[1:]
        full = (len(pfn) - head) // PTRS_PER_PTE
        if full:
            body = slice(head, head + full * PTRS_PER_PTE)
            r = rows[:full]
            ok = r >= 0
            self.tpfn[r[ok]] = pfn[body].reshape(full, PTRS_PER_PTE)[ok]
            self.tbits[r[ok]] = bits[body].reshape(full, PTRS_PER_PTE)[ok]
        tail = len(pfn) - head - full * PTRS_PER_PTE
        if tail and rows[full] >= 0:
            self.tpfn[rows[full], :tail] = pfn[len(pfn) - tail:]
            self.tbits[rows[full], :tail] = bits[len(pfn) - tail:]

    def clear_range(self, vlo, vhi):
        """Every PTE of [vlo, vhi) becomes none (the tables stay)."""
        a, b = self._span(vlo, vhi)
        for p in range(a, b):
            if self.kind[p] != TABLE:
                continue
            base = int(self.keys[p]) << PTE_SHIFT
            s0, s1 = max(vlo - base, 0), min(vhi - base, PTRS_PER_PTE)
            r = int(self.val[p])
            self.tpfn[r, s0:s1] = -1
            self.tbits[r, s0:s1] = 0

    def _bits_op(self, vpns, mask, op):
        vpns = np.asarray(vpns, dtype=np.int64)
        if len(vpns) == 0 or len(self.keys) == 0:
            return
        pos, found = self._lookup(vpns)
        kind = self.kind[np.minimum(pos, len(self.keys) - 1)]
        t = found & (kind == TABLE)
        lf = pos[found & (kind == LEAF)]
        rows, slot = self.val[pos[t]], vpns[t] & (PTRS_PER_PTE - 1)
        m = np.uint8(mask)
        self.tbits[rows, slot] = op(self.tbits[rows, slot], m)
        self.lbits[lf] = op(self.lbits[lf], m)

    def or_bits_at(self, vpns, mask):
        """Sets bits of the entries mapping `vpns`; a PMD leaf is one entry."""
        self._bits_op(vpns, mask, np.bitwise_or)

    def and_bits_at(self, vpns, mask):
        self._bits_op(vpns, mask & 0xff, np.bitwise_and)

    def set_leaves(self, keys, pfn0, bits):
        """set_pmd_at() for blocks `keys` (no PTE table there)."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) == 0:
            return
        pfn0 = np.broadcast_to(np.asarray(pfn0, dtype=np.int64), keys.shape)
        bits = np.broadcast_to(np.asarray(bits, dtype=np.uint8) | np.uint8(PTE_PMD), keys.shape)
        pos, found = self._find(keys)
        if (self.kind[pos[found]] == TABLE).any():
            raise AssertionError('PMD leaf wanted where a PTE table is')
        self.val[pos[found]] = pfn0[found]
        self.lbits[pos[found]] = bits[found]
        order = np.argsort(keys[~found], kind='stable')
        self._insert(keys[~found][order], LEAF, pfn0[~found][order], bits[~found][order])

    def set_leaf_bits(self, keys, bits):
        pos, found = self._find(keys)
        self.lbits[pos[found]] = np.asarray(bits, dtype=np.uint8) | np.uint8(PTE_PMD)

    def clear_leaves(self, keys):
        """pmdp_huge_get_and_clear(): the blocks become pmd_none()."""
        pos, found = self._find(keys)
        pos = pos[found]
        self._remove(pos[self.kind[pos] == LEAF])

    def leaves_to_tables(self, keys):
        """A PMD leaf replaced by a PTE table mapping the same 512 pages
        with the same bits (__split_huge_pmd_locked for anon folios)."""
        keys = np.asarray(keys, dtype=np.int64)
        pos, found = self._find(keys)
        pos = pos[found]
        pos = pos[self.kind[pos] == LEAF]
        if len(pos) == 0:
            return
        rows = self._alloc_rows(len(pos))
        self.tpfn[rows] = self.val[pos][:, None] + _SLOTS
        bits = self.lbits[pos] & np.uint8(~PTE_PMD & 0xff)
        self.tbits[rows] = bits[:, None]
        self.kind[pos] = TABLE
        self.val[pos] = rows
        self.lbits[pos] = 0

    def nbytes(self):
        return sum(a.nbytes for a in (self.keys, self.kind, self.val, self.lbits, self.tpfn,
                                      self.tbits))
