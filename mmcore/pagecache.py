"""Page cache of files and shmem objects.

Scenario files live on tmpfs, as on the recording machine
(shared/conformance/README.md): their folios are swap-backed and count as
shmem (NR_SHMEM, RssShmem, memcg shmem).  A `shared-anon` mapping is backed
by its own shmem object, shared by fork (shmem_zero_setup).
"""
import numpy as np

from .mm import VM_HUGEPAGE, VM_NOHUGEPAGE

from .memory import (FL_LRU, FL_PAGECACHE, FL_SWAPBACKED, FL_UPTODATE, HPAGE_PMD_ORDER,
                     PAGE_SHIFT, sorted_groups, sorted_unique)

SHMEM_DEV = (0, 1)          # the tmpfs superblock's anonymous device
FIRST_INODE = 1000


class PageCacheIndex:
    """The address_space's xarray: the PFN cached at each file index (-1:
    none), stored in blocks of 512 indices allocated on first store, so an
    object costs what is cached, not its size.  Indexed like an array by
    an int, a slice or an index array."""

    BLOCK_SHIFT = 9
    BLOCK = 1 << BLOCK_SHIFT

    def __init__(self, nr_pages):
        self.nr_pages = nr_pages
        self.blocks = {}

    def __len__(self):
        return self.nr_pages

    def _indices(self, key):
        if isinstance(key, slice):
            return np.arange(*key.indices(self.nr_pages), dtype=np.int64)
        return np.asarray(key, dtype=np.int64)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            blk = self.blocks.get(int(key) >> self.BLOCK_SHIFT)
            return np.int64(-1) if blk is None else blk[int(key) & (self.BLOCK - 1)]
        idx = self._indices(key)
        out = np.full(idx.shape, -1, dtype=np.int64)
        if len(self.blocks) == 0 or idx.size == 0:
            return out
        b = idx >> self.BLOCK_SHIFT
        for key in sorted_unique(b.ravel()):
            blk = self.blocks.get(int(key))
            if blk is not None:
                m = b == key
                out[m] = blk[idx[m] & (self.BLOCK - 1)]
        return out

    def __setitem__(self, key, values):
        idx = self._indices(key).ravel()
        values = np.broadcast_to(np.asarray(values, dtype=np.int64), idx.shape)
        b = idx >> self.BLOCK_SHIFT
        # one stable sort by block: indices keep their order within a block
        # (a repeated index takes its last value)
        order = np.argsort(b, kind='stable') if len(b) > 1 and (b[1:] < b[:-1]).any() else None
        if order is not None:
            idx, values, b = idx[order], values[order], b[order]
        keys, counts = sorted_groups(b)
        ends = np.cumsum(counts)
        for key, lo, hi in zip(keys.tolist(), (ends - counts).tolist(), ends.tolist()):
            blk = self.blocks.get(key)
            v = values[lo:hi]
            if blk is None:
                if not (v >= 0).any():
                    continue
                blk = self.blocks[key] = np.full(self.BLOCK, -1, dtype=np.int64)
            blk[idx[lo:hi] & (self.BLOCK - 1)] = v

    def cached(self):
        """(indices, PFNs) of every cached page, in index order."""
        idx, pfn = [], []
        for key in sorted(self.blocks):
            blk = self.blocks[key]
            i = np.flatnonzero(blk >= 0)
            idx.append((key << self.BLOCK_SHIFT) + i)
            pfn.append(blk[i])
        if not idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(idx), np.concatenate(pfn)

    def any_cached(self):
        return any((blk >= 0).any() for blk in self.blocks.values())

    def clear(self):
        self.blocks = {}

    def tobytes(self):
        """The dense index as bytes (O(size): for tests)."""
        return self[:].tobytes()


class FileObject:
    """An inode with its address_space (page cache)."""

    def __init__(self, obj_id, name, path, size, folio_size, shmem_anon=False, inode=0):
        self.id = obj_id
        self.name = name
        self.path = path
        self.size = size
        self.folio_order = max(0, (folio_size >> PAGE_SHIFT).bit_length() - 1)
        self.shmem_anon = shmem_anon       # backs a MAP_SHARED|MAP_ANONYMOUS range
        self.inode = inode
        self.dev = SHMEM_DEV
        # a partial last page is still a page of the file (its tail reads as zeros)
        self.pages = PageCacheIndex(-(-size >> PAGE_SHIFT))

    @property
    def nr_pages(self):
        return len(self.pages)


def shmem_huge_order(thp, vma, index, nr_pages):
    """shmem_allowable_huge_orders() + shmem_suitable_orders(): a PMD-sized
    folio for a shmem fault when the shmem_enabled knob allows it, the VMA
    is not VM_NOHUGEPAGE, and the 2M block holding `index` lies inside the
    object and, aligned, inside the VMA.  Per-size shmem knobs stay `never`
    (as on the recording machine), so the only large order is the PMD
    one."""
    if shmem_huge_order_never(thp, vma):
        return 0
    nr = 1 << HPAGE_PMD_ORDER
    start = index & ~(nr - 1)
    if start + nr > nr_pages:
        return 0
    addr = vma.start + ((start - vma.pgoff) << PAGE_SHIFT)
    if addr % (nr << PAGE_SHIFT) or addr < vma.start or addr + (nr << PAGE_SHIFT) > vma.end:
        return 0
    return HPAGE_PMD_ORDER


def shmem_huge_order_never(thp, vma):
    """shmem_huge_order() is 0 for every index of the VMA: the knob or the
    VMA's flags rule huge folios out."""
    mode = thp.shmem_enabled
    if mode in ('never', 'deny') or vma.flags & VM_NOHUGEPAGE:
        return True
    return mode == 'advise' and not vma.flags & VM_HUGEPAGE


def _init_cache_folios(k, obj, heads, starts, nr, memcg):
    """A new page-cache folio of nr pages at each head, holding file
    indices [start, start + nr): clean, uptodate, on the LRU, one reference
    per page in the cache (filemap_add_folio)."""
    mem = k.mem
    mem.flags[heads] = FL_PAGECACHE | FL_UPTODATE | FL_LRU | FL_SWAPBACKED
    mem.refcount[heads] = nr
    mem.memcg[heads] = memcg
    mem.mapping[heads] = obj.id
    mem.index[heads] = starts


def filemap_add_small_folios(k, obj, indices, memcg):
    """filemap_get_folio() for each of the uncached file `indices`, in
    ascending order, where each gets an order-0 folio: as many single
    allocations would, the lowest free frames in ascending order."""
    heads = k.mem.alloc(0, len(indices))
    _init_cache_folios(k, obj, heads, indices, 1, memcg)
    obj.pages[indices] = heads


def filemap_get_folio(k, obj, index, order, memcg):
    """Finds the page-cache folio holding `index`, or allocates and inserts
    one of `order` (shrunk until it fits in the file and in a free slot of
    the cache).  Returns the PFN of the page at `index`."""
    pfn = obj.pages[index]
    if pfn >= 0:
        return int(pfn)
    mem = k.mem
    while order > 0:
        start = index & ~((1 << order) - 1)
        end = start + (1 << order)
        if end <= obj.nr_pages and (obj.pages[start:end] < 0).all():
            break
        order -= 1
    start = index & ~((1 << order) - 1)
    head = int(mem.alloc(order, 1)[0])
    nr = 1 << order
    _init_cache_folios(k, obj, head, start, nr, memcg)
    obj.pages[start:start + nr] = head + np.arange(nr)
    if order:
        k.count_event('mthp/%dkB/shmem_alloc' % (4 << order))
        if order == HPAGE_PMD_ORDER:
            k.count_event('thp_file_alloc')
    return int(obj.pages[index])


def truncate_object(k, obj):
    """Drops the page cache of an object nobody maps or opens any more
    (shmem_evict_inode for shared-anon objects)."""
    pfns = obj.pages.cached()[1]
    if len(pfns) == 0:
        return
    heads = sorted_unique(k.mem.head[pfns])
    k.mem.flags[heads] &= ~np.uint32(FL_PAGECACHE)
    k.mem.mapping[heads] = -1
    k.mem.folio_put(heads, k.mem.folio_nr_pages(heads))
    obj.pages.clear()
