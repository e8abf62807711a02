"""Address spaces: mm_struct, VMAs and their page tables, MM IDs.

A VMA keeps its page table as two arrays over its pages: the PFN each
entry maps (-1: none) and the entry's bits.  A PMD leaf is stored as 512
entries that carry PTE_PMD and consecutive PFNs of one folio; it always
covers a whole naturally aligned 2 MiB block of the VMA.
"""
import numpy as np

from .memory import PAGE_SHIFT, PAGE_SIZE, HPAGE_PMD_NR

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

# top of the mmap area (placements go down from there) and its extent,
# and TASK_SIZE, per word size
LAYOUT = {64: (0x7f0000000000, 1 << 44, (1 << 47) - PAGE_SIZE),
          32: (0xb7f00000, 0x70000000, 0xc0000000)}
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
        n = (end - start) >> PAGE_SHIFT
        self.pfn = np.full(n, -1, dtype=np.int64)
        self.bits = np.zeros(n, dtype=np.uint8)

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

    def split(self, addr):
        """Splits at addr (page aligned, inside); returns the upper part."""
        i = self.page_index(addr)
        hi = VMA(addr, self.end, self.flags, self.kind, self.name, self.obj,
                 self.pgoff + i if self.obj is not None else 0)
        hi.anon_vma = self.anon_vma
        hi.range_start = self.range_start
        hi.pfn = self.pfn[i:].copy()
        hi.bits = self.bits[i:].copy()
        self.pfn = self.pfn[:i].copy()
        self.bits = self.bits[:i].copy()
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
        self.pfn = np.concatenate([self.pfn, other.pfn])
        self.bits = np.concatenate([self.bits, other.bits])
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
        self.pte_tables = set()      # 2M blocks (addr >> 21) with a PTE table

    # --- VMAs -----------------------------------------------------------------------
    def find_vma(self, addr):
        for v in self.vmas:
            if v.start <= addr < v.end:
                return v
        return None

    def vmas_in(self, start, end):
        return [v for v in self.vmas if v.start < end and v.end > start]

    def insert_vma(self, vma):
        self.vmas.append(vma)
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
