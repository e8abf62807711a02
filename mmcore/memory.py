"""Physical memory: page frames, folios and their per-folio/per-page state.

All state lives in numpy arrays indexed by PFN.  Per-folio fields are kept
at the folio's head PFN (the kernel keeps them in page[0..2] of the folio,
semantics.md 3.3); per-page fields (per-page mapcount, AnonExclusive) at
each PFN.  Folios are naturally aligned blocks of 2^order frames
(order 0..9), handed out by a lowest-address-first allocator.
"""
import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER

# folio flags (subset of enum pageflags plus folio-level state we track)
FL_ANON = 1 << 0            # folio->mapping is an anon_vma
FL_SWAPBACKED = 1 << 1      # PG_swapbacked
FL_DIRTY = 1 << 2           # PG_dirty
FL_LRU = 1 << 3             # PG_lru
FL_ACTIVE = 1 << 4          # PG_active
FL_REFERENCED = 1 << 5      # PG_referenced
FL_UPTODATE = 1 << 6        # PG_uptodate
FL_PARTIALLY_MAPPED = 1 << 7  # PG_partially_mapped (on the deferred split queue)
FL_ZERO = 1 << 8            # the shared zero page or the huge zero folio
FL_PAGECACHE = 1 << 9       # in a file's or shmem object's page cache
FL_KSM = 1 << 10
FL_RESERVED = 1 << 11       # PG_reserved (kernel image, zero page)
FL_UNEVICTABLE = 1 << 12
FL_MLOCKED = 1 << 13
FL_DEFERRED = 1 << 14       # on a deferred split list (new THPs, 6.12+)

# GUP_PIN_COUNTING_BIAS (include/linux/mm.h): FOLL_PIN on a small folio adds
# this to the refcount; on a large folio it adds 1 and bumps _pincount.
GUP_PIN_COUNTING_BIAS = 1024

RESERVED_LOW_FRAMES = 256   # the first MiB: firmware and kernel image


class OutOfMemory(Exception):
    pass


def sorted_groups(keys):
    """(sorted unique keys, count of each) by one sort: linear in practice
    where np.unique's hash path is not (keys come mostly in order)."""
    keys = np.asarray(keys, dtype=np.int64)
    if len(keys) <= 1:
        return keys, np.ones(len(keys), dtype=np.int64)
    s = keys if (keys[1:] >= keys[:-1]).all() else np.sort(keys, kind='stable')
    first = np.empty(len(s), dtype=bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(s)))
    return s[starts], counts


def sorted_unique(keys):
    return sorted_groups(keys)[0]


# per-folio fields: (name, dtype, value of a free slot, shape of one element).
# The counters the kernel keeps in an atomic_t (_refcount, _large_mapcount,
# _entire_mapcount, _nr_pages_mapped, _pincount) and the 31-bit MM IDs are
# 32-bit here too; the per-MM mapcounts are logical values up to 2^31
# (mm_id_mapcount_max), one more than an int32 holds, and the RFC's
# _total_mapped_pages is an atomic_long_t: those two stay 64-bit.
FOLIO_FIELDS = (
    ('head', np.int64, -1, ()),                # head PFN
    ('order', np.int8, 0, ()),
    ('refcount', np.int32, 0, ()),
    ('large_mapcount', np.int32, 0, ()),       # LM, logical
    ('entire_mapcount', np.int32, 0, ()),      # E, logical
    ('nr_pages_mapped', np.int32, 0, ()),      # PAGE_MAPCOUNT only
    ('total_mapped_pages', np.int64, 0, ()),   # the 2026 RFC only
    ('mm_id', np.int32, 0, (2,)),              # _mm_id[0], _mm_id[1]
    ('mm_id_mapcount', np.int64, 0, (2,)),     # logical (stored + 1)
    ('maybe_shared', np.bool_, False, ()),     # FOLIO_MM_IDS_SHARED_BIT
    ('pincount', np.int32, 0, ()),
    ('flags', np.uint32, 0, ()),
    ('memcg', np.int32, 0, ()),                # memcg index of the charge
    ('mapping', np.int32, -1, ()),             # page-cache object id
    ('index', np.int64, 0, ()),                # page-cache index of the head
)


class FolioField(NDArrayOperatorsMixin):
    """One per-folio field, indexed like a per-PFN array: any PFN of a
    folio reads and writes its folio's value, a free frame reads the free
    value.  np.add.at() and the like work on it; used whole (operators,
    ufuncs, np.asarray) it is the per-PFN array, materialized."""

    __slots__ = ('mem', 'attr')

    def __array__(self, dtype=None, copy=None):
        a = getattr(self.mem, self.attr)[self.mem.slot]
        return a if dtype is None else a.astype(dtype)

    def __len__(self):
        return self.mem.nr_frames

    def copy(self):
        return np.asarray(self)

    def __getattr__(self, name):
        if name.startswith('__') or name in ('mem', 'attr'):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def __init__(self, mem, name):
        self.mem = mem
        self.attr = '_f_' + name

    def _key(self, key):
        if isinstance(key, tuple):
            return (self.mem.slot_index(key[0]),) + key[1:]
        return self.mem.slot_index(key)

    def __getitem__(self, key):
        return getattr(self.mem, self.attr)[self._key(key)]

    def __setitem__(self, key, value):
        getattr(self.mem, self.attr)[self._key(key)] = value

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == 'at' and inputs[0] is self:
            return ufunc.at(getattr(self.mem, self.attr), self._key(inputs[1]), *inputs[2:])
        inputs = tuple(np.asarray(x) if isinstance(x, FolioField) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)


class PhysMem:
    """Frames and folio state of the whole machine.

    Per frame: whether it is free, the slot of the folio it belongs to
    (0: none), and the per-page state (page->_mapcount, AnonExclusive).
    Per folio, in slot-indexed arrays that grow with the folios allocated:
    FOLIO_FIELDS, read and written by PFN through FolioField."""

    def __init__(self, memory_bytes):
        n = memory_bytes >> PAGE_SHIFT
        self.nr_frames = n
        self.free = np.ones(n, dtype=bool)
        self._low = 0                # every frame below is allocated
        self.slot = np.zeros(n, dtype=np.int32)
        # per page
        self.page_mapcount = np.zeros(n, dtype=np.int32)     # _mapcount + 1
        self.anon_exclusive = np.zeros(n, dtype=bool)        # PG_anon_exclusive
        # per folio: slot 0 stands for "no folio"
        for name, dt, default, shape in FOLIO_FIELDS:
            setattr(self, '_f_' + name, np.full((1,) + shape, default, dtype=dt))
            setattr(self, name, FolioField(self, name))
        self._free_slots = np.zeros(0, dtype=np.int32)
        self._nr_free_slots = 0
        self._reserve(0, min(RESERVED_LOW_FRAMES, n))
        self.zero_pfn = self._alloc_fixed(0)
        self.flags[self.zero_pfn] = FL_ZERO | FL_RESERVED | FL_UPTODATE
        self.huge_zero_pfn = -1

    # --- folio slots -------------------------------------------------------------
    def _alloc_slots(self, count, heads):
        """Slots for `count` new folios with head PFNs `heads`, in the
        state of a free slot except for the head."""
        if self._nr_free_slots < count:
            cap = len(self._f_head)
            new = max(cap + cap // 2, cap + count - self._nr_free_slots, 1024)
            for name, dt, default, shape in FOLIO_FIELDS:
                arr = np.empty((new,) + shape, dtype=dt)
                arr[:cap] = getattr(self, '_f_' + name)
                arr[cap:] = default
                setattr(self, '_f_' + name, arr)
            fs = np.zeros(new, dtype=np.int32)
            fs[:self._nr_free_slots] = self._free_slots[:self._nr_free_slots]
            added = np.arange(new - 1, cap - 1, -1, dtype=np.int32)
            fs[self._nr_free_slots:self._nr_free_slots + len(added)] = added
            self._free_slots = fs
            self._nr_free_slots += len(added)
        top = self._nr_free_slots
        slots = self._free_slots[top - count:top][::-1].copy()
        self._nr_free_slots -= count
        at = int(slots[0]) if count == 1 else slots
        for name, dt, default, shape in FOLIO_FIELDS:
            getattr(self, '_f_' + name)[at] = default
        self._f_head[slots] = heads
        return slots

    def trim_slots(self):
        """Gives back the slot capacity above the highest slot in use (the
        arrays grow by half, so up to a third of them is spare), once a
        replay or an import is done; returns the slots given back."""
        top = int(self.slot.max()) + 1 if self.nr_frames else 1
        cap = len(self._f_head)
        if top >= cap:
            return 0
        for name, dt, default, shape in FOLIO_FIELDS:
            setattr(self, '_f_' + name, getattr(self, '_f_' + name)[:top].copy())
        free = self._free_slots[:self._nr_free_slots]
        free = free[free < top]
        self._free_slots = np.concatenate([free, np.zeros(top - len(free), dtype=np.int32)])
        self._nr_free_slots = len(free)
        return cap - top

    def _release_slots(self, slots):
        top = self._nr_free_slots
        self._free_slots[top:top + len(slots)] = slots
        self._nr_free_slots += len(slots)

    def slot_index(self, pfns):
        """The folio slots of pfns as an index: intp, which numpy gathers
        several times faster than int32."""
        slots = self.slot[pfns]
        return slots.astype(np.intp) if isinstance(slots, np.ndarray) else slots

    def folio_fields(self, pfns, *names):
        """The per-folio fields `names` of the folios of pfns, with one
        lookup of their slots."""
        slots = self.slot_index(pfns)
        return tuple(getattr(self, '_f_' + n)[slots] for n in names)

    def split_slots(self, head, nr):
        """The tail pages of the folio at `head` become heads of folios of
        their own (__split_huge_page: new order-0 folios), each with a slot
        copied from the folio's."""
        pfns = head + np.arange(1, nr, dtype=np.int64)
        old = int(self.slot[head])
        slots = self._alloc_slots(len(pfns), pfns)
        for name, dt, default, shape in FOLIO_FIELDS:
            if name != 'head':
                arr = getattr(self, '_f_' + name)
                arr[slots] = arr[old]
        self.slot[pfns] = slots

    def nbytes(self):
        """Bytes of emulator memory: per-frame arrays and folio slots."""
        per_frame = self.free.nbytes + self.slot.nbytes + self.page_mapcount.nbytes + \
            self.anon_exclusive.nbytes
        return per_frame, sum(getattr(self, '_f_' + f[0]).nbytes for f in FOLIO_FIELDS)

    # --- allocation ---------------------------------------------------------
    def _reserve(self, start, count):
        pfns = np.arange(start, start + count)
        self.free[pfns] = False
        self.slot[pfns] = self._alloc_slots(count, pfns)
        self.flags[pfns] = FL_RESERVED
        self.refcount[pfns] = 1

    def _alloc_fixed(self, order):
        heads = self.alloc(order, 1)
        self.refcount[heads] = 1
        return int(heads[0])

    def get_huge_zero_pfn(self):
        """mm_get_huge_zero_folio(): allocated on first use, kept after."""
        if self.huge_zero_pfn < 0:
            h = self._alloc_fixed(HPAGE_PMD_ORDER)
            self.flags[h] = FL_ZERO | FL_UPTODATE
            self.huge_zero_pfn = h
        return self.huge_zero_pfn

    def alloc(self, order, count):
        """Allocates `count` folios of `order` at the lowest free naturally
        aligned blocks; returns their head PFNs (ascending).  State fields
        start as prep_compound_head() leaves them: unmapped, free slots.
        The search starts at the lowest frame that may be free."""
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        nr = 1 << order
        usable = self.nr_frames - self.nr_frames % nr
        start = self._low // nr * nr
        window = max(2 * count * nr, 1 << 10, 4 * nr)
        while True:
            end = min(usable, start + window // nr * nr)
            blocks = self.free[start:end].reshape(-1, nr).all(axis=1)
            idx = np.flatnonzero(blocks)
            if len(idx) >= count or end >= usable:
                break
            window *= 4
        if len(idx) < count:
            raise OutOfMemory('out of memory: %d folios of order %d wanted, %d free'
                              % (count, order, len(idx)))
        heads = start + idx[:count].astype(np.int64) * nr
        rows = heads >> order
        self._blocks(self.free, order)[rows] = False
        slots = self._alloc_slots(count, heads)
        self._blocks(self.slot, order)[rows] = slots[:, None]
        self._blocks(self.page_mapcount, order)[rows] = 0
        self._blocks(self.anon_exclusive, order)[rows] = False
        self._f_order[slots] = order
        rest = self.free[self._low:end]
        first = int(rest.argmax()) if len(rest) else 0
        self._low += first if len(rest) and rest[first] else max(end - self._low, 0)
        return heads

    def free_folios(self, heads):
        """Returns folios whose last reference went to the allocator."""
        if len(heads) == 0:
            return
        orders = self.order[heads].astype(np.int64)
        for o in sorted_unique(orders):
            o = int(o)
            hs = heads[orders == o]
            rows = hs >> o
            self._blocks(self.free, o)[rows] = True
            self._low = min(self._low, int(hs.min()))
            self._release_slots(self.slot[hs])
            self._blocks(self.slot, o)[rows] = 0
            self._blocks(self.page_mapcount, o)[rows] = 0
            self._blocks(self.anon_exclusive, o)[rows] = False

    def _blocks(self, arr, order):
        """A per-frame array seen as rows of naturally aligned 2^order frames."""
        nr = 1 << order
        return arr[:self.nr_frames - self.nr_frames % nr].reshape(-1, nr)

    # --- folio helpers ---------------------------------------------------------
    def folio_nr_pages(self, heads):
        return np.left_shift(1, self.order[heads].astype(np.int64))

    def folio_put(self, heads, refs):
        """Drops references; frees folios that reach zero (folio_put)."""
        uniq = self._sub_refs(heads, refs)
        dead = uniq[self.refcount[uniq] <= 0]
        if len(dead):
            self.refcount[dead] = 0
            self.free_folios(dead)
        return dead

    def _sub_refs(self, heads, refs):
        """refcount[heads] -= refs, a head may repeat; returns the unique heads."""
        heads = np.asarray(heads, dtype=np.int64)
        if np.ndim(refs) == 0:
            uniq, counts = sorted_groups(heads)
            self.refcount[uniq] -= counts * int(refs)
            return uniq
        np.subtract.at(self.refcount, heads, refs)
        return sorted_unique(heads)

    def folio_get(self, heads, refs):
        heads = np.asarray(heads, dtype=np.int64)
        if np.ndim(refs) == 0:
            uniq, counts = sorted_groups(heads)
            self.refcount[uniq] += counts * int(refs)
            return
        np.add.at(self.refcount, heads, refs)

    def clear_anon_exclusive_pmd(self, heads):
        """ClearPageAnonExclusive() on every page of PMD-sized folios."""
        heads = np.asarray(heads, dtype=np.int64)
        usable = self.nr_frames - self.nr_frames % HPAGE_PMD_NR
        self.anon_exclusive[:usable].reshape(-1, HPAGE_PMD_NR)[heads >> HPAGE_PMD_ORDER] = False

    def nr_free_frames(self):
        return int(np.count_nonzero(self.free))

    def allocated_folio_heads(self):
        """Head PFNs of every allocated folio (including reserved frames)."""
        pfn = np.flatnonzero(~self.free)
        return pfn[self.head[pfn] == pfn]
