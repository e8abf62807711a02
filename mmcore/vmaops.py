"""VMA-changing system calls: mprotect() and mremap() (mm/mprotect.c,
mm/mremap.c), and flag changes on a range shared with madvise()."""
import numpy as np

from .errors import Fault
from .memory import FL_ANON, HPAGE_PMD_NR, PAGE_SHIFT, PAGE_SIZE
from .mm import (VMA, PROT_FLAGS, VM_ACCOUNT, VM_SHARED, PTE_DIRTY, PTE_PMD, PTE_WRITE, VM_READ, VM_WRITE)
from . import pmd as pmdops
from .unmap import split_vma_at, do_munmap, free_pgtables

HPAGE_PMD_SIZE = HPAGE_PMD_NR * PAGE_SIZE


def vmas_for_range(k, proc, start, end, stop_at_hole):
    """Splits VMAs at start and end; returns the VMAs to act on and whether
    part of [start, end) is unmapped (ENOMEM once the call is done).
    mprotect() stops at the first hole (do_mprotect_pkey); madvise() goes
    on over every mapped part (madvise_walk_vmas); neither changes anything
    when start itself is unmapped."""
    mm = proc.mm
    if mm.find_vma(start) is None:
        raise Fault('ENOMEM: 0x%x is not mapped' % start)
    split_vma_at(k, mm, start)
    split_vma_at(k, mm, end)
    vmas = mm.vmas_in(start, end)
    hole = False
    out = []
    expect = start
    for v in vmas:
        if v.start != expect:
            hole = True
            if stop_at_hole:
                break
        out.append(v)
        expect = v.end
    if expect < end:
        hole = True
    return out, hole


def can_change_pte_writable(k, vma, pfns, bits):
    """can_change_pte_writable(): private pages must be AnonExclusive anon
    pages; shared ones must already be dirty."""
    if vma.is_shared:
        return (bits & PTE_DIRTY) != 0
    heads = k.mem.head[pfns]
    return ((k.mem.flags[heads] & FL_ANON) != 0) & k.mem.anon_exclusive[pfns] & \
        (pfns != k.mem.zero_pfn)


def do_mprotect(k, proc, start, end, prot):
    vmas, hole = vmas_for_range(k, proc, start, end, stop_at_hole=True)
    new = PROT_FLAGS[prot]
    for v in vmas:
        if new & VM_WRITE and not v.flags & (VM_ACCOUNT | VM_WRITE | VM_SHARED):
            new_flags = new | VM_ACCOUNT      # mprotect_fixup() charges it now
        else:
            new_flags = new
        v.flags = (v.flags & ~(VM_READ | VM_WRITE)) | new_flags
        change_protection(k, v, bool(new & VM_WRITE))
    proc.mm.merge_vmas()
    if hole:
        raise Fault('ENOMEM: part of 0x%x-0x%x is not mapped' % (start, end))


def change_protection(k, vma, writable):
    """change_pte_range() / change_huge_pmd() over the present entries: a
    PMD leaf is one entry and takes its head page's AnonExclusive."""
    idx, pfns, bits = vma.present_ptes()
    lidx, lpfn, lbits = vma.pmd_leaves()
    if not writable:
        vma.and_bits(idx, ~PTE_WRITE)
        vma.and_bits(lidx, ~PTE_WRITE)
        return
    if vma.is_shared:
        vma.or_bits(idx, PTE_WRITE)
        vma.or_bits(lidx, PTE_WRITE)
        return
    vma.or_bits(idx[can_change_pte_writable(k, vma, pfns, bits)], PTE_WRITE)
    vma.or_bits(lidx[can_change_pte_writable(k, vma, lpfn, lbits)], PTE_WRITE)


def do_mremap(k, proc, name, new_size, move_to):
    mm = proc.mm
    vmas = k.range_vmas(proc, name)
    if not vmas:
        raise Fault('EFAULT: range %r is not mapped' % name)
    if len(vmas) > 1:
        raise Fault('EFAULT: range %r spans %d VMAs; mremap needs one' % (name, len(vmas)))
    vma = vmas[0]
    old_size = vma.end - vma.start
    if move_to is not None and vma.start + old_size > move_to and move_to + new_size > vma.start:
        # check_mremap_params(): MREMAP_FIXED to a range overlapping the old one
        raise Fault('EINVAL: mremap to 0x%x overlaps the range being moved' % move_to)
    if new_size < old_size:
        do_munmap(k, proc, vma.start + new_size, vma.end)
    if move_to is None and new_size > old_size:
        if mm.range_is_free(vma.end, vma.start + new_size + PAGE_SIZE) and \
                vma.start + new_size + PAGE_SIZE <= mm.mmap_base:
            grow_vma(vma, new_size)
            return
        align = HPAGE_PMD_SIZE if new_size % HPAGE_PMD_SIZE == 0 else PAGE_SIZE
        try:
            move_to = mm.get_unmapped_area(new_size, align)
        except MemoryError as e:
            raise Fault('ENOMEM: %s' % e)
    if move_to is None:
        return
    if move_to + new_size > mm.task_size:
        raise Fault('EINVAL: 0x%x is beyond the user address space' % move_to)
    do_munmap(k, proc, move_to, move_to + new_size)
    move_vma(k, proc, vma, move_to, new_size)


def grow_vma(vma, new_size):
    vma.end = vma.start + new_size


def move_vma(k, proc, vma, new_start, new_size):
    """move_vma() + move_page_tables(): a PMD leaf moves as a PMD when the
    old and new addresses agree modulo 2M, else it is split first; the
    mappings themselves (rmap, counts) do not change."""
    mm = proc.mm
    delta_pages = (new_start - vma.start) >> PAGE_SHIFT
    if delta_pages % HPAGE_PMD_NR:
        for b in pmdops.pmd_leaves_in(vma, 0, vma.nr_pages):
            pmdops.split_pmd(k, mm, vma, b)
    mm.remove_vma(vma)
    moved = VMA(new_start, new_start + (vma.end - vma.start), vma.flags, vma.kind, vma.name,
                vma.obj, vma.pgoff)
    moved.anon_vma = vma.anon_vma
    moved.range_start = new_start - (vma.start - vma.range_start)
    moved.pt = mm.pt
    idx, pfns, bits = vma.present_ptes()
    lidx, lpfn, lbits = vma.pmd_leaves()
    vma.set_ptes(idx, -1, 0)
    vma.clear_pmd_leaves(lidx)
    moved.set_ptes(idx, pfns, bits)
    moved.set_pmd_leaves(lidx, lpfn, lbits)
    if new_size > moved.end - moved.start:
        grow_vma(moved, new_size)
    mm.insert_vma(moved)
    free_pgtables(mm)
