"""Page faults (mm/memory.c, mm/huge_memory.c).

`access()` touches every page of [start, end) in address order, as the
scenario's `read`/`write` do: a page whose entry already allows the access
only gets its accessed (and dirty) bits set; every other page takes the
fault path the kernel would take.  Private anonymous memory is handled a
range at a time with array operations; file and shmem mappings a page at a
time (fault-around and page-cache lookups are sequential by nature).
"""
import numpy as np

from .errors import Fault
from .memory import (FL_ANON, FL_DIRTY, FL_LRU, FL_SWAPBACKED, FL_UPTODATE, FL_DEFERRED,
                     HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SHIFT, OutOfMemory)
from .mm import (PTE_DIRTY, PTE_PMD, PTE_PRESENT, PTE_WRITE, PTE_YOUNG, VM_HUGEPAGE,
                 VM_NOHUGEPAGE, VM_READ, VM_WRITE)
from .pagecache import (filemap_add_small_folios, filemap_get_folio, shmem_huge_order,
                        shmem_huge_order_never)
from . import pmd as pmdops

FAULT_AROUND_PAGES = 16       # fault_around_bytes = 64K
ANON_ORDERS = range(HPAGE_PMD_ORDER, 0, -1)


# --- THP order policy ---------------------------------------------------------------

def anon_orders_allowed(k, vma):
    """thp_vma_allowable_orders() for an anonymous VMA: the orders whose
    hugepages-<size>kB/enabled says always, or madvise with VM_HUGEPAGE, or
    inherit and the top-level knob allows it (scenario-format "Folio size
    at a fault")."""
    if vma.flags & VM_NOHUGEPAGE:
        return []
    thp = k.thp
    hinted = bool(vma.flags & VM_HUGEPAGE)
    out = []
    for size, mode in thp.sizes.items():
        if mode == 'inherit':
            mode = thp.enabled
        if mode == 'always' or (mode == 'madvise' and hinted):
            out.append((size >> PAGE_SHIFT).bit_length() - 1)
    return sorted(out, reverse=True)


# --- entry point ----------------------------------------------------------------------

def access(k, proc, start, end, write):
    """Touches [start, end) page by page in address order."""
    mm = proc.mm
    addr = start
    while addr < end:
        vma = mm.find_vma(addr)
        if vma is None:
            raise Fault('SIGSEGV at 0x%x: no mapping' % addr)
        need = VM_WRITE if write else VM_READ
        if not vma.flags & need:
            raise Fault('SIGSEGV at 0x%x: %s of a mapping without PROT_%s'
                        % (addr, 'write' if write else 'read', 'WRITE' if write else 'READ'))
        hi = min(end, vma.end)
        lo_i, hi_i = vma.page_index(addr), vma.page_index(hi)
        if vma.is_anon:
            if write:
                anon_write_range(k, proc, vma, lo_i, hi_i)
            else:
                anon_read_range(k, proc, vma, lo_i, hi_i)
        else:
            file_access_range(k, proc, vma, lo_i, hi_i, write)
        addr = hi


def file_access_range(k, proc, vma, lo, hi, write):
    """Pages [lo, hi) of a file or shmem VMA in address order, as
    file_fault() takes each of them, a page table at a time: pages whose
    entries already allow the access only get their accessed bits; a run
    of present read-only PTEs of a private mapping written to is copied by
    one wp_ptes() (do_wp_page() on each, as anon_write_range() does), a
    run of empty pages of a shared mapping written to by
    shared_write_faults(); any other page takes file_fault(), and the
    search resumes after it on the entries that fault left."""
    cow = write and not vma.is_shared
    i = lo
    while i < hi:
        w = min(hi, i + HPAGE_PMD_NR)
        pfn, bits = vma.ptes(i, w)
        ok = pfn >= 0
        if write:
            ok &= (bits & PTE_WRITE) != 0
        j = w if ok.all() else i + int(np.argmin(ok))
        if j > i:
            mark_accessed(vma, np.arange(i, j), write)
        if j == w:
            i = w
            continue
        if cow:
            ro = (pfn[j - i:] >= 0) & ((bits[j - i:] & (PTE_WRITE | PTE_PMD)) == 0)
            run = _run_length(ro)
            if run:
                wp_ptes(k, proc, vma, np.arange(j, j + run))
                i = j + run
                continue
            run = cow_faults_of_cached(k, proc, vma, j, pfn[j - i:] < 0)
            if run:
                i = j + run
                continue
        elif write and small_folios_only(k, vma):
            run = _run_length(pfn[j - i:] < 0)
            run = min(run, vma.obj.nr_pages - file_index(vma, j))
            if run > 1:
                shared_write_faults(k, proc, vma, np.arange(j, j + run))
                i = j + run
                continue
        file_fault(k, proc, vma, j, write)
        i = j + 1


def _run_length(mask):
    """Length of the run of True at the start of mask."""
    return len(mask) if mask.all() else int(np.argmin(mask))


def small_folios_only(k, vma):
    """The page cache behind the VMA gets only order-0 folios at a fault
    (file_folio_order() is 0 for every index of it)."""
    obj = vma.obj
    if obj.shmem_anon:
        return shmem_huge_order_never(k.thp, vma)
    return obj.folio_order == 0


def shared_write_faults(k, proc, vma, idx):
    """do_shared_fault() on each of the empty pages idx (consecutive, inside
    the file) of a shared mapping whose page cache holds order-0 folios
    only: each page's folio is looked up or allocated in address order
    (the lowest free frames, ascending, as one allocation of them all
    gives) and mapped writable and dirty by one PTE."""
    mem = k.mem
    index = file_index(vma, idx)
    cached = vma.obj.pages[index]
    if not (mem.order[mem.head[cached[cached >= 0]]] == 0).all():
        return _file_faults(k, proc, vma, idx, True)   # a large folio is mapped whole
    try:
        filemap_add_small_folios(k, vma.obj, index[cached < 0], k.memcg_of(proc))
    except OutOfMemory:
        return _file_faults(k, proc, vma, idx, True)   # stops at the page that meets it
    map_file_pages(k, proc, vma, idx, True)
    pfns = vma.obj.pages[index]
    mem.flags[pfns] |= FL_DIRTY


def cow_faults_of_cached(k, proc, vma, j, empty):
    """do_cow_fault() on each page of the run of empty pages from VMA index
    j (mask `empty` from j on) whose file pages are all in the page cache
    already: nothing is read in, each page gets a private order-0 copy, in
    address order (one allocation of them all takes the same frames).
    Returns the number of pages faulted."""
    index = file_index(vma, j) + np.arange(_run_length(empty))
    index = index[index < vma.obj.nr_pages]
    run = _run_length(vma.obj.pages[index] >= 0)
    if run:
        new_anon_folios(k, proc, vma, np.arange(j, j + run), 0)
    return run


def _file_faults(k, proc, vma, idx, write):
    for i in idx:
        file_fault(k, proc, vma, int(i), write)


def mark_accessed(vma, idx, write):
    """What the MMU does on an access through a valid entry: the accessed
    (and dirty) bit of that entry, which for a PMD leaf covers its 512
    pages."""
    vma.or_bits(idx, PTE_YOUNG | (PTE_DIRTY if write else 0))


# --- private anonymous memory -----------------------------------------------------------

def pmd_block_free(mm, vma, blk_start):
    """pmd_none() for the 2M block starting at page index blk_start."""
    return bool(vma.pmd_none([blk_start])[0])


def pmd_blocks(vma, lo, hi):
    """Page indices of the PMD-aligned 2M blocks inside the VMA that
    intersect [lo, hi)."""
    first_addr = (vma.start + (lo << PAGE_SHIFT)) & ~((1 << 21) - 1)
    out = []
    a = first_addr
    while a < vma.start + (hi << PAGE_SHIFT):
        if a >= vma.start and a + (1 << 21) <= vma.end:
            out.append(vma.page_index(a))
        a += 1 << 21
    return out


def anon_read_range(k, proc, vma, lo, hi):
    """do_anonymous_page() / do_huge_pmd_anonymous_page() for reads: the
    huge zero page for a whole empty PMD block when the PMD size is allowed
    and use_zero_page is on, else the shared zero page per PTE.  With
    use_zero_page off a PMD block gets a new THP."""
    mm = proc.mm
    idx = np.arange(lo, hi)
    present = vma.ptes(lo, hi)[0] >= 0
    mark_accessed(vma, idx[present], False)
    if present.all():
        return
    if HPAGE_PMD_ORDER in anon_orders_allowed(k, vma):
        for b in pmd_blocks(vma, lo, hi):
            if not pmd_block_free(mm, vma, b):
                continue
            if k.thp.use_zero_page:
                # do_huge_pmd_anonymous_page() calls vmf_anon_prepare()
                # before mapping the huge zero page, so fork copies the PMD
                vma.anon_vma = True
                hz = k.mem.get_huge_zero_pfn()
                vma.set_pmd_leaves(np.array([b]), hz, PTE_PRESENT | PTE_YOUNG | PTE_PMD)
            else:
                new_anon_folios(k, proc, vma, np.array([b]), HPAGE_PMD_ORDER)
    empty = idx[vma.ptes(lo, hi)[0] < 0]
    vma.set_ptes(empty, k.mem.zero_pfn, PTE_PRESENT | PTE_YOUNG)


def new_anon_folios(k, proc, vma, starts, order):
    """Allocates anon folios of `order` mapped at VMA page indices `starts`
    (folio_add_new_anon_rmap + set_ptes / set_pmd_at), writable, dirty
    and young."""
    if len(starts) == 0:
        return
    mem = k.mem
    nr = 1 << order
    heads = k.alloc(order, len(starts))
    mem.memcg[heads] = k.memcg_of(proc)
    mem.flags[heads] |= FL_LRU | FL_UPTODATE
    pmd = order == HPAGE_PMD_ORDER
    if order >= 2:
        mem.flags[heads] |= FL_DEFERRED     # 6.12+: new THPs go on the deferred list
    k.rmap.add_new_anon(proc.mm.mm_id, heads, pmd)
    mem.refcount[heads] = 1 if pmd else nr
    bits = PTE_PRESENT | PTE_WRITE | PTE_DIRTY | PTE_YOUNG
    starts = np.asarray(starts, dtype=np.int64)
    if pmd:
        vma.set_pmd_leaves(starts, heads, bits | PTE_PMD)
    else:
        idx = (starts[:, None] + np.arange(nr)).ravel()
        vma.set_ptes(idx, (heads[:, None] + np.arange(nr)).ravel(), bits)
    vma.anon_vma = True
    proc.mm.add_rss('anon', len(starts) * nr)
    if order == HPAGE_PMD_ORDER:
        k.count_event('thp_fault_alloc', len(heads))
    if order > 0:
        k.count_event('mthp/%dkB/anon_fault_alloc' % (4 << order), len(heads))


def anon_fault_orders(k, proc, vma, lo, hi, empty):
    """Folio sizes that do_anonymous_page() picks for the empty pages of
    [lo, hi) faulted in address order: for each order from the largest
    enabled one down, the naturally aligned blocks inside the VMA, all
    empty, reaching into the range and not inside a block already chosen.
    Checking against the state before the first fault is exact: a block is
    still empty at the fault of its first page in the range exactly when it
    was empty before (aligned blocks nest).  The PMD order needs pmd_none()
    instead (no page table in the block yet)."""
    n = vma.nr_pages
    base = vma.start >> PAGE_SHIFT
    # every candidate block lies in the PMD-aligned window around [lo, hi)
    w0 = max(0, ((base + lo) & ~(HPAGE_PMD_NR - 1)) - base)
    w1 = min(n, (((base + hi - 1) | (HPAGE_PMD_NR - 1)) + 1) - base)
    wpfn = vma.ptes(w0, w1)[0]
    covered = np.zeros(w1 - w0, dtype=bool)
    chosen = []
    for order in anon_orders_allowed(k, vma):
        nr = 1 << order
        first = -(-(base + w0) // nr) * nr - base   # first aligned index in the window
        starts = np.arange(first, w1 - nr + 1, nr)
        starts = starts[(starts + nr > lo) & (starts < hi)]
        if len(starts) == 0:
            continue
        blk = starts[:, None] - w0 + np.arange(nr)
        ok = (wpfn[blk] < 0).all(axis=1) & ~covered[starts - w0]
        if order == HPAGE_PMD_ORDER:
            ok &= vma.pmd_none(starts)
        starts = starts[ok]
        if len(starts):
            chosen.append((order, starts))
            covered[(starts[:, None] - w0 + np.arange(nr)).ravel()] = True
    small = empty[~covered[empty - w0]]
    chosen.append((0, small))
    return chosen


def anon_write_range(k, proc, vma, lo, hi):
    """A write to every page of [lo, hi) of a private anonymous VMA."""
    idx = np.arange(lo, hi)
    bits = vma.ptes(lo, hi)[1]
    writable = (bits & (PTE_PRESENT | PTE_WRITE)) == (PTE_PRESENT | PTE_WRITE)
    mark_accessed(vma, idx[writable], True)
    # PMD leaves that are not writable: do_huge_pmd_wp_page()
    leaves, _, lbits = vma.pmd_leaves(lo, hi)
    for b in leaves[(lbits & PTE_WRITE) == 0]:
        pmd_write_fault(k, proc, vma, int(b))
    # present, read-only PTEs: do_wp_page()
    bits = vma.ptes(lo, hi)[1]
    pres = idx[((bits & (PTE_PRESENT | PTE_WRITE | PTE_PMD)) == PTE_PRESENT)]
    if len(pres):
        wp_ptes(k, proc, vma, pres)
    # PMD leaves made writable above: the write itself
    pfn, bits = vma.ptes(lo, hi)
    pmdw = idx[(bits & (PTE_PMD | PTE_WRITE)) == (PTE_PMD | PTE_WRITE)]
    mark_accessed(vma, pmdw, True)
    # empty entries: do_anonymous_page() / do_huge_pmd_anonymous_page()
    empty = idx[pfn < 0]
    if len(empty) == 0:
        return
    for order, starts in anon_fault_orders(k, proc, vma, lo, hi, empty):
        new_anon_folios(k, proc, vma, starts, order)


def pmd_write_fault(k, proc, vma, b):
    """do_huge_pmd_wp_page() on a read-only PMD at VMA index b."""
    mem = k.mem
    pfn = vma.entry(b)[0]
    head = int(mem.head[pfn])
    if pfn == mem.huge_zero_pfn:
        # do_huge_zero_wp_pmd(): replace the huge zero page by a new THP
        vma.clear_pmd_leaves([b])
        new_anon_folios(k, proc, vma, np.array([b]), HPAGE_PMD_ORDER)
        return
    if mem.anon_exclusive[head] or mem.refcount[head] == 1:
        mem.anon_exclusive[head] = True
        vma.or_bits([b], PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
        k.cost['cow_pages_reused'] += HPAGE_PMD_NR
        return
    pmdops.split_pmd(k, proc.mm, vma, b)


def wp_can_reuse(k, pfns):
    """Per page: the write may reuse the page (wp_can_reuse_anon_folio):
    already AnonExclusive; small folio with refcount 1; large folio with
    large mapcount > 1, shared bit clear and refcount == large mapcount
    (__wp_can_reuse_large_anon_folio, semantics.md 6.3).  The folio-level
    answer cannot change while one MM writes its pages in turn: copying
    drops mapcount and refcount together and frees a slot only after the
    MM's last page of the folio (semantics.md 4.3)."""
    mem = k.mem
    heads = mem.head[pfns]
    anon = (mem.flags[heads] & FL_ANON) != 0
    small = mem.order[heads] == 0
    lm = mem.large_mapcount[heads]
    reuse_small = small & (mem.refcount[heads] == 1)
    reuse_large = ~small & (lm > 1) & ~mem.maybe_shared[heads] & (mem.refcount[heads] == lm)
    return anon & (mem.anon_exclusive[pfns] | reuse_small | reuse_large)


def wp_ptes(k, proc, vma, idx):
    """do_wp_page() for present read-only PTEs of a private VMA."""
    mem = k.mem
    pfns = vma.ptes_at(idx)[0]
    zero = pfns == mem.zero_pfn
    reuse = np.zeros(len(idx), dtype=bool)
    reuse[~zero] = wp_can_reuse(k, pfns[~zero])
    r = idx[reuse]
    k.cost['cow_pages_reused'] += len(r)
    if len(r):
        mem.anon_exclusive[pfns[reuse]] = True
        vma.or_bits(r, PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
    copy = idx[~reuse]
    if len(copy):
        wp_page_copy(k, proc, vma, copy)


def wp_page_copy(k, proc, vma, idx):
    """wp_page_copy(): each page gets a new order-0 anon folio (zeroed for
    the zero page, a copy otherwise); the old mapping is removed one page
    at a time, as the kernel does."""
    mem = k.mem
    mm = proc.mm
    old = vma.ptes_at(idx)[0]
    real = old != mem.zero_pfn
    old_real = old[real]
    if len(old_real):
        # one SUB per page: rounds over the pages of each folio
        heads = mem.head[old_real]
        k.cost['cow_pages_copied'] += len(old_real)
        k.cost['cow_folios_copied'] += len(old_real)     # one order-0 folio per copy
        order = np.argsort(heads, kind='stable')
        sh = heads[order]
        rank = np.arange(len(sh)) - np.searchsorted(sh, sh)
        kinds = mem.flags[heads]
        # round r removes the r-th page of every folio: the pages grouped
        # by rank once, each round a slice
        by_rank = old_real[order[np.argsort(rank, kind='stable')]]
        ends = np.cumsum(np.bincount(rank))
        for start, end in zip(np.concatenate([[0], ends[:-1]]), ends):
            k.rmap.remove_ptes(mm.mm_id, by_rank[start:end])
        anon_old = (kinds & FL_ANON) != 0
        shmem_old = ~anon_old & ((kinds & FL_SWAPBACKED) != 0)
        mm.add_rss('anon', -int(anon_old.sum()))
        mm.add_rss('shmem', -int(shmem_old.sum()))
        mm.add_rss('file', -int((~anon_old & ~shmem_old).sum()))
        mem.folio_put(heads, 1)
    vma.set_ptes(idx, -1, 0)
    new_anon_folios(k, proc, vma, idx, 0)


# --- file and shmem mappings -------------------------------------------------------------

def file_index(vma, i):
    return vma.pgoff + i


def file_folio_order(k, vma, index):
    obj = vma.obj
    if obj.shmem_anon:
        return shmem_huge_order(k.thp, vma, index, obj.nr_pages)
    return obj.folio_order


def file_fault(k, proc, vma, i, write):
    """One page of a file or shmem mapping (do_read_fault, do_cow_fault,
    do_shared_fault, do_wp_page)."""
    mem = k.mem
    pfn, bits = vma.entry(i)
    if pfn >= 0:
        if not write or bits & PTE_WRITE:
            mark_accessed(vma, np.array([i]), write)
            return
        if vma.is_shared:
            # wp_page_shared(): no copy, the PTE becomes writable
            if bits & PTE_PMD:
                pmdops.split_pmd(k, proc.mm, vma, pmdops.pmd_start(vma, i))
                return file_fault(k, proc, vma, i, write)
            vma.or_bits([i], PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
            mem.flags[mem.head[pfn]] |= FL_DIRTY
            return
        if bits & PTE_PMD:
            pmdops.split_pmd(k, proc.mm, vma, pmdops.pmd_start(vma, i))
            return file_fault(k, proc, vma, i, write)
        wp_ptes(k, proc, vma, np.array([i]))
        return
    index = file_index(vma, i)
    if index >= vma.obj.nr_pages:
        raise Fault('SIGBUS at 0x%x: beyond the end of %s' % (vma.start + (i << PAGE_SHIFT),
                                                             vma.obj.path))
    if write and not vma.is_shared:
        # do_cow_fault(): the page-cache page is read in, a private copy mapped
        filemap_get_folio(k, vma.obj, index, file_folio_order(k, vma, index), k.memcg_of(proc))
        new_anon_folios(k, proc, vma, np.array([i]), 0)
        return
    if not write:
        fault_around(k, proc, vma, i)
        if vma.entry(i)[0] >= 0:
            return
    pfn = filemap_get_folio(k, vma.obj, index, file_folio_order(k, vma, index), k.memcg_of(proc))
    finish_fault(k, proc, vma, i, pfn, write)
    if write:
        mem.flags[mem.head[pfn]] |= FL_DIRTY


def file_pte_bits(vma, write):
    """mk_pte() with vm_page_prot: shared writable tmpfs/shmem mappings need
    no write notification, so their PTEs are writable from the start;
    private ones are read-only until a write fault."""
    bits = PTE_PRESENT | PTE_YOUNG
    if vma.is_shared and vma.flags & VM_WRITE:
        bits |= PTE_WRITE
    if write:
        bits |= PTE_WRITE | PTE_DIRTY
    return bits


def map_file_pages(k, proc, vma, idx, write):
    """set_pte_range(): maps page-cache pages at VMA indices idx."""
    if len(idx) == 0:
        return
    mem = k.mem
    idx = np.asarray(idx, dtype=np.int64)
    pfns = vma.obj.pages[vma.pgoff + idx]
    vma.set_ptes(idx, pfns, file_pte_bits(vma, write))
    k.rmap.add_ptes(proc.mm.mm_id, pfns)
    mem.folio_get(mem.head[pfns], 1)
    proc.mm.add_rss('shmem', len(idx))


def fault_around(k, proc, vma, i):
    """do_fault_around() + filemap_map_pages(): maps the cached pages of
    the 64K window around the fault; the window starts at the aligned
    address clamped to the VMA and runs for 16 pages, clamped to the VMA
    and the page table.  A cached PMD-sized folio is mapped by a PMD
    (filemap_map_pmd); a large folio that fits in the VMA and the page
    table is mapped whole (filemap_map_folio_range)."""
    mem = k.mem
    addr = vma.start + (i << PAGE_SHIFT)
    win = FAULT_AROUND_PAGES << PAGE_SHIFT
    pmd_start = addr & ~((1 << 21) - 1)
    start = max(addr & ~(win - 1), vma.start, pmd_start)
    end = min(start + win, vma.end, pmd_start + (1 << 21))
    index = vma.pgoff + i
    if index < vma.obj.nr_pages and vma.obj.pages[index] >= 0:
        pfn = int(vma.obj.pages[index])
        head = int(mem.head[pfn])
        first = i - (pfn - head)
        if mem.order[head] == HPAGE_PMD_ORDER and pmd_mappable(proc, vma, first):
            pmdops.map_file_pmd(k, proc, vma, first, head, False)
            return
        if mem.order[head] > HPAGE_PMD_ORDER:
            map_folio_pmds_ptes(k, proc, vma, first, head, False)
            return
    lo, hi = vma.page_index(start), vma.page_index(end)
    idx = np.arange(lo, hi)
    index = vma.pgoff + idx
    inside = index < vma.obj.nr_pages
    idx, index = idx[inside], index[inside]
    cached = vma.obj.pages[index] >= 0
    cand = set(int(x) for x in idx[cached & (vma.ptes_at(idx)[0] < 0)])
    for j in sorted(cand):
        pfn = int(vma.obj.pages[vma.pgoff + j])
        head = int(mem.head[pfn])
        nr = 1 << int(mem.order[head])
        first = j - (pfn - head)
        if nr > 1 and folio_fits(vma, first, nr):
            fidx = np.arange(first, first + nr)
            cand.update(int(x) for x in fidx[vma.ptes_at(fidx)[0] < 0])
    map_file_pages(k, proc, vma, np.array(sorted(cand), dtype=np.int64), False)


def folio_fits(vma, first, nr):
    """The folio's pages [first, first + nr) lie in the VMA and in one page
    table."""
    base = vma.start >> PAGE_SHIFT
    return first >= 0 and first + nr <= vma.nr_pages and \
        (base + first) // HPAGE_PMD_NR == (base + first + nr - 1) // HPAGE_PMD_NR


def pmd_mappable(proc, vma, first):
    """do_set_pmd() may map a PMD-sized folio starting at VMA index first:
    aligned, inside the VMA, THP not disabled for it, no page table yet."""
    return first >= 0 and first + HPAGE_PMD_NR <= vma.nr_pages and \
        ((vma.start >> PAGE_SHIFT) + first) % HPAGE_PMD_NR == 0 and \
        not vma.flags & VM_NOHUGEPAGE and pmd_block_free(proc.mm, vma, first)


def finish_fault(k, proc, vma, i, pfn, write):
    """finish_fault(): a PMD-sized folio is mapped by a PMD when do_set_pmd()
    allows it; a large shmem folio is mapped whole when it fits in the VMA
    and the page table and none of its entries is populated yet; else one
    page."""
    mem = k.mem
    head = int(mem.head[pfn])
    order = int(mem.order[head])
    nr = 1 << order
    first = i - (pfn - head)
    if order == HPAGE_PMD_ORDER and pmd_mappable(proc, vma, first):
        pmdops.map_file_pmd(k, proc, vma, first, head, write)
        return
    if order > HPAGE_PMD_ORDER:
        map_folio_pmds_ptes(k, proc, vma, first, head, write)
        return
    idx = np.array([i])
    if order > 0 and folio_fits(vma, first, nr) and (vma.ptes(first, first + nr)[0] < 0).all():
        idx = np.arange(first, first + nr)
    map_file_pages(k, proc, vma, idx, write)


def map_folio_pmds_ptes(k, proc, vma, first, head, write):
    """A page-cache folio larger than a PMD, its first page at VMA index
    `first` (only a kernel with the 2026 RFC has such folios, policy
    max_folio_order; RFC 13/13 "mapping folios that span multiple PMDs"):
    every PMD-sized part of it that do_set_pmd() could map (pmd_mappable)
    gets a PMD, the folio's other unmapped pages inside the VMA get PTEs.
    The RFC teaches only the rmap code ("calling code still has to be
    updated to support that"); this is the fault path its rmap allows."""
    nr = 1 << int(k.mem.order[head])
    ptes = []
    for c in range(0, nr, HPAGE_PMD_NR):
        j = first + c
        lo, hi = max(j, 0), min(j + HPAGE_PMD_NR, vma.nr_pages)
        if lo >= hi:
            continue
        empty = vma.ptes(lo, hi)[0] < 0
        if pmd_mappable(proc, vma, j) and empty.all():
            pmdops.map_file_pmd(k, proc, vma, j, head, write, pfn0=head + c)
            continue
        ptes.append(np.arange(lo, hi)[empty])
    if ptes:
        map_file_pages(k, proc, vma, np.concatenate(ptes), write)
