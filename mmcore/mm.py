"""Address spaces: mm_struct, VMAs and their page tables, MM IDs.

The page tables belong to the mm (pagetable.PageTable: per 2 MiB block
nothing, a PMD leaf or a PTE table); a VMA reads and writes the entries of
its own pages through the helpers below, indexed by page within the VMA.
A PMD leaf always covers a whole naturally aligned 2 MiB block of a VMA;
read as pages it shows 512 entries carrying PTE_PMD and consecutive PFNs.
"""
import numpy as np

from .memory import PAGE_SHIFT, PAGE_SIZE, HPAGE_PMD_NR
from .pagetable import PageTable, PTE_SHIFT

# page-table entry bits
PTE_PRESENT = 1
PTE_WRITE = 2
PTE_DIRTY = 4
PTE_YOUNG = 8
PTE_PMD = 16          # part of a PMD leaf
PTE_SOFT_DIRTY = 32

# vm_flags, with the kernel's bit numbers (include/linux/mm.h)
VM_READ = 1 << 0
VM_WRITE = 1 << 1
VM_EXEC = 1 << 2
VM_SHARED = 1 << 3
VM_MAYREAD = 1 << 4
VM_MAYWRITE = 1 << 5
VM_MAYEXEC = 1 << 6
VM_MAYSHARE = 1 << 7
VM_GROWSDOWN = 1 << 8
VM_PFNMAP = 1 << 10
VM_LOCKED = 1 << 13
VM_IO = 1 << 14
VM_SEQ_READ = 1 << 15
VM_RAND_READ = 1 << 16
VM_DONTCOPY = 1 << 17
VM_DONTEXPAND = 1 << 18
VM_LOCKONFAULT = 1 << 19
VM_ACCOUNT = 1 << 20
VM_NORESERVE = 1 << 21
VM_HUGETLB = 1 << 22
VM_SYNC = 1 << 23
VM_ARCH_1 = 1 << 24
VM_WIPEONFORK = 1 << 25
VM_DONTDUMP = 1 << 26
VM_SOFTDIRTY = 1 << 27
VM_MIXEDMAP = 1 << 28
VM_HUGEPAGE = 1 << 29
VM_NOHUGEPAGE = 1 << 30
VM_MERGEABLE = 1 << 31

PROT_FLAGS = {'rw': VM_READ | VM_WRITE, 'r': VM_READ, 'none': 0}

# top of the mmap area (placements go down from there) and its extent
# (top-down down to mmap_min_addr, 64K), and TASK_SIZE, per word size
MMAP_MIN_ADDR = 0x10000
LAYOUT = {64: (0x7f0000000000, 0x7f0000000000 - MMAP_MIN_ADDR, (1 << 47) - PAGE_SIZE),
          32: (0xb7f00000, 0xb7f00000 - MMAP_MIN_ADDR, 0xc0000000)}
HPAGE_PMD_SIZE = HPAGE_PMD_NR * PAGE_SIZE


class VMA:
    """vm_area_struct with its page table."""

    def __init__(self, start, end, flags, kind, name, obj=None, pgoff=0):
        self.start = start
        self.end = end
        self.flags = flags
        self.kind = kind              # anon | shared-anon | file | shared-file
        self.name = name              # the scenario's range name
        self.obj = obj                # FileObject for file and shared-anon kinds
        self.pgoff = pgoff            # file offset of start, in pages
        self.anon_vma = False         # has (had) anonymous pages: fork copies it
        self.range_start = start      # where the named range began (offsets refer to it)
        self.pt = PageTable()         # the mm's page tables once inserted

    @property
    def nr_pages(self):
        return (self.end - self.start) >> PAGE_SHIFT

    @property
    def is_shared(self):
        return bool(self.flags & VM_SHARED)

    @property
    def is_anon(self):
        """vma_is_anonymous(): private anonymous memory."""
        return self.kind == 'anon'

    @property
    def is_cow(self):
        """is_cow_mapping(): private and may be written."""
        return (self.flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE

    def page_index(self, addr):
        return (addr - self.start) >> PAGE_SHIFT

    # --- page-table entries of this VMA's pages (index = page in the VMA) -------
    @property
    def vpn0(self):
        return self.start >> PAGE_SHIFT

    def _hi(self, hi):
        return self.nr_pages if hi is None else hi

    def ptes(self, lo=0, hi=None):
        """(pfn, bits) of pages [lo, hi), PMD leaves shown page by page."""
        return self.pt.get(self.vpn0 + lo, self.vpn0 + self._hi(hi))

    def ptes_at(self, idx):
        return self.pt.get_at(self.vpn0 + np.asarray(idx, dtype=np.int64))

    def entry(self, i):
        """(pfn, bits) of page i."""
        p, b = self.pt.get_at(np.array([self.vpn0 + i]))
        return int(p[0]), int(b[0])

    @property
    def pfn(self):
        """PFN of every page of the VMA (-1: none); read-only, O(VMA size)."""
        p = self.ptes()[0]
        p.flags.writeable = False
        return p

    @property
    def bits(self):
        b = self.ptes()[1]
        b.flags.writeable = False
        return b

    def set_ptes(self, idx, pfn, bits):
        """Writes PTEs of pages idx (not inside a PMD leaf)."""
        self.pt.set_at(self.vpn0 + np.asarray(idx, dtype=np.int64), pfn, bits)

    def clear_ptes(self, lo=0, hi=None):
        """pte_clear() of every PTE of pages [lo, hi) (PMD leaves stay)."""
        self.pt.clear_range(self.vpn0 + lo, self.vpn0 + self._hi(hi))

    def or_bits(self, idx, mask):
        """Sets bits in the entries mapping pages idx (a PMD leaf is one entry)."""
        self.pt.or_bits_at(self.vpn0 + np.asarray(idx, dtype=np.int64), mask)

    def and_bits(self, idx, mask):
        self.pt.and_bits_at(self.vpn0 + np.asarray(idx, dtype=np.int64), mask)

    def present_ptes(self, lo=0, hi=None):
        """(indices, pfn, bits) of the present PTEs (not PMD leaves) of
        pages [lo, hi), in address order."""
        v, p, b = self.pt.present_ptes(self.vpn0 + lo, self.vpn0 + self._hi(hi))
        return v - self.vpn0, p, b

    def pte_tables(self, lo=0, hi=None):
        """(first page index, pfn rows, bits rows) of the PTE tables
        meeting pages [lo, hi), whole tables of 512 entries each (pages of
        a table outside [lo, hi) may lie outside the VMA)."""
        k, p, b = self.pt.tables(self.vpn0 + lo, self.vpn0 + self._hi(hi))
        return (k << PTE_SHIFT) - self.vpn0, p, b

    def pmd_leaves(self, lo=0, hi=None):
        """(first page index, first PFN, bits) of the PMD leaves meeting
        pages [lo, hi)."""
        hi = self._hi(hi)
        if hi <= lo:
            z = np.zeros(0, dtype=np.int64)
            return z, z.copy(), np.zeros(0, dtype=np.uint8)
        k, p, b = self.pt.leaves(self.vpn0 + lo, self.vpn0 + hi)
        return (k << PTE_SHIFT) - self.vpn0, p, b

    def populated_runs(self):
        """[(first page, pages)] of the runs of 2M blocks of this VMA that
        have a PMD leaf or a PTE table (nothing is mapped elsewhere)."""
        a, b = self.pt._span(self.vpn0, self.end >> PAGE_SHIFT)
        out = []
        for key in self.pt.keys[a:b].tolist():
            lo = max(key << PTE_SHIFT, self.vpn0) - self.vpn0
            hi = min((key + 1) << PTE_SHIFT, self.end >> PAGE_SHIFT) - self.vpn0
            if out and out[-1][0] + out[-1][1] == lo:
                out[-1] = (out[-1][0], hi - out[-1][0])
            else:
                out.append((lo, hi - lo))
        return out

    def mapped_pfns(self):
        """PFN of every present page, in address order (PMD leaves page by page)."""
        idx, pfn, _ = self.present_ptes()
        lidx, lpfn, _ = self.pmd_leaves()
        if len(lidx) == 0:
            return pfn
        sl = np.arange(HPAGE_PMD_NR)
        idx = np.concatenate([idx, (lidx[:, None] + sl).ravel()])
        pfn = np.concatenate([pfn, (lpfn[:, None] + sl).ravel()])
        return pfn[np.argsort(idx, kind='stable')]

    def pmd_key(self, idx):
        return (self.vpn0 + np.asarray(idx, dtype=np.int64)) >> PTE_SHIFT

    def set_pmd_leaves(self, idx, pfn0, bits):
        self.pt.set_leaves(self.pmd_key(idx), pfn0, bits)

    def set_pmd_bits(self, idx, bits):
        self.pt.set_leaf_bits(self.pmd_key(idx), bits)

    def clear_pmd_leaves(self, idx):
        self.pt.clear_leaves(self.pmd_key(idx))

    def pmd_none(self, idx):
        """Per 2M block starting at page idx: no PMD leaf and no PTE table."""
        return ~self.pt.has_entry(self.pmd_key(idx))

    def split(self, addr):
        """Splits at addr (page aligned, inside); returns the upper part,
        which shares the mm's page tables."""
        i = self.page_index(addr)
        hi = VMA(addr, self.end, self.flags, self.kind, self.name, self.obj,
                 self.pgoff + i if self.obj is not None else 0)
        hi.anon_vma = self.anon_vma
        hi.range_start = self.range_start
        hi.pt = self.pt
        self.end = addr
        return hi

    def can_merge(self, other):
        """is_mergeable_vma(): adjacent, same flags, same object at the
        following offset, same name."""
        if self.end != other.start or self.flags != other.flags or self.kind != other.kind \
                or self.name != other.name or self.obj is not other.obj \
                or self.range_start != other.range_start:
            return False
        return self.obj is None or self.pgoff + self.nr_pages == other.pgoff

    def merge(self, other):
        self.end = other.end
        self.anon_vma = self.anon_vma or other.anon_vma


class MMIdAllocator:
    """The global mm_ida: lowest free ID in [1, MM_ID_MAX] (kernel/fork.c
    mm_init(), semantics.md 2.2)."""

    def __init__(self, maximum):
        self.maximum = maximum
        self.used = set()
        self.lowest_free = 1

    def alloc(self):
        i = self.lowest_free
        while i in self.used:
            i += 1
        if i > self.maximum:
            raise MemoryError('MM IDs exhausted')
        self.used.add(i)
        self.lowest_free = i + 1
        return i

    def free(self, i):
        self.used.discard(i)
        self.lowest_free = min(self.lowest_free, i)


class MM:
    """mm_struct: VMAs sorted by address, RSS counters, MM ID."""

    def __init__(self, mm_id, bits=64):
        self.mm_id = mm_id
        self.bits = bits
        self.mmap_base, self.mmap_area, self.task_size = LAYOUT[bits]
        self.vmas = []
        self.rss = {'anon': 0, 'file': 0, 'shmem': 0, 'swap': 0}
        self.hiwater_rss = 0
        self.hiwater_vm = 0
        self.has_pinned = False      # MMF_HAS_PINNED
        self.pt = PageTable()

    @property
    def pte_tables(self):
        """2M blocks (addr >> 21) with a PTE table."""
        return set(int(x) for x in self.pt.table_keys())

    # --- VMAs -----------------------------------------------------------------------
    def find_vma(self, addr):
        for v in self.vmas:
            if v.start <= addr < v.end:
                return v
        return None

    def vmas_in(self, start, end):
        return [v for v in self.vmas if v.start < end and v.end > start]

    def insert_vma(self, vma):
        self.insert_vmas([vma])

    def insert_vmas(self, vmas):
        for vma in vmas:
            vma.pt = self.pt
        self.vmas.extend(vmas)
        self.vmas.sort(key=lambda v: v.start)
        self.update_hiwater_vm()

    def remove_vma(self, vma):
        self.vmas.remove(vma)

    def range_is_free(self, start, end):
        return not self.vmas_in(start, end)

    def total_vm_pages(self):
        return sum(v.nr_pages for v in self.vmas)

    def rss_pages(self):
        return self.rss['anon'] + self.rss['file'] + self.rss['shmem']

    def add_rss(self, kind, pages):
        self.rss[kind] += int(pages)
        self.hiwater_rss = max(self.hiwater_rss, self.rss_pages())

    def update_hiwater_vm(self):
        self.hiwater_vm = max(self.hiwater_vm, self.total_vm_pages())

    def get_unmapped_area(self, size, align):
        """Top-down placement below every mapping in the mmap area, aligned
        as asked, leaving at least one free page on each side so that
        neighbouring ranges never merge."""
        base = self.mmap_base
        low = min([v.start for v in self.vmas if base - self.mmap_area <= v.start <= base]
                  + [base])
        addr = (low - PAGE_SIZE - size) // align * align
        while not self.range_is_free(addr - PAGE_SIZE, addr + size + PAGE_SIZE):
            addr = (addr - PAGE_SIZE - size) // align * align
        if addr < base - self.mmap_area:
            raise MemoryError('no room for %d bytes in the address space' % size)
        return addr

    def merge_vmas(self):
        """Merges adjacent compatible VMAs (vma_merge after mprotect and
        madvise)."""
        out = []
        for v in self.vmas:
            if out and out[-1].can_merge(v):
                out[-1].merge(v)
            else:
                out.append(v)
        self.vmas = out
