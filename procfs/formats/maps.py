"""/proc/PID/maps lines and the VmFlags mnemonics (semantics.md 9.1, 9.2).

Emulates ``show_vma_header_prefix()`` + ``show_map_vma()`` and
``show_smap_vma_flags()`` of fs/proc/task_mmu.c (Linux 6.18, x86).
"""
import re

from ._seq import FormatInputError, check_text, check_uint, hex_width, mangle_path

PAGE_SHIFT = 12

_PERMS = re.compile(r'[r-][w-][x-][sp]')

# Bit number of each VmFlags mnemonic in vm_flags (x86-64, 6.18).  Bits
# 32-35 are the x86 protection-key bits: the kernel prints nothing for them
# (they show in "ProtectionKey:"), so they have no entry here.  Not listed:
# VM_MAYBE_GUARD ("gu", bit 11), which we believe arrived after 6.18, and the
# arm64/powerpc-only mnemonics (bt, mt, ...).  Only rd wr ex sh mr mw me ms
# lo dc ac wf dd hg nh were seen on the real kernel (tests/data/real).
VM_FLAG_BITS = {
    'rd': 0,    # VM_READ
    'wr': 1,    # VM_WRITE
    'ex': 2,    # VM_EXEC
    'sh': 3,    # VM_SHARED
    'mr': 4,    # VM_MAYREAD
    'mw': 5,    # VM_MAYWRITE
    'me': 6,    # VM_MAYEXEC
    'ms': 7,    # VM_MAYSHARE
    'gd': 8,    # VM_GROWSDOWN
    'um': 9,    # VM_UFFD_MISSING
    'pf': 10,   # VM_PFNMAP
    'uw': 12,   # VM_UFFD_WP
    'lo': 13,   # VM_LOCKED
    'io': 14,   # VM_IO
    'sr': 15,   # VM_SEQ_READ
    'rr': 16,   # VM_RAND_READ
    'dc': 17,   # VM_DONTCOPY
    'de': 18,   # VM_DONTEXPAND
    'lf': 19,   # VM_LOCKONFAULT
    'ac': 20,   # VM_ACCOUNT
    'nr': 21,   # VM_NORESERVE
    'ht': 22,   # VM_HUGETLB
    'sf': 23,   # VM_SYNC
    'ar': 24,   # VM_ARCH_1 (VM_PAT on x86)
    'wf': 25,   # VM_WIPEONFORK
    'dd': 26,   # VM_DONTDUMP
    'sd': 27,   # VM_SOFTDIRTY
    'mm': 28,   # VM_MIXEDMAP
    'hg': 29,   # VM_HUGEPAGE
    'nh': 30,   # VM_NOHUGEPAGE
    'mg': 31,   # VM_MERGEABLE
    'ss': 37,   # VM_SHADOW_STACK (VM_HIGH_ARCH_5, x86 user shadow stacks)
    'ui': 38,   # VM_UFFD_MINOR
    'dp': 40,   # VM_DROPPABLE (64-bit only)
    'sl': 42,   # VM_SEALED (64-bit only)
}


def header_width(bits=64):
    """Column the name is padded to: ``25 + sizeof(void *) * 6 - 1``."""
    if bits not in (32, 64):
        raise FormatInputError(f'bits must be 32 or 64, got {bits!r}')
    return 25 + (bits // 8) * 6 - 1


def maps_line(start, end, perms, offset=0, major=0, minor=0, inode=0, name=None, bits=64):
    """One /proc/PID/maps line, newline included.

    ``start``/``end`` are virtual addresses, ``perms`` the four characters
    (``'s'`` for VM_MAYSHARE), ``offset`` the file offset in bytes
    (``vm_pgoff << PAGE_SHIFT``), ``name`` the path or pseudo name
    (``[heap]``, ``/dev/zero (deleted)``...) or None for an unnamed VMA.
    A named line is padded so the name starts after ``header_width(bits)``
    columns plus one space; an unnamed one ends in ``"0 "``.  Newlines in the
    name are escaped as ``\\012`` (``seq_file_path(m, file, "\\n")``).
    """
    addr_limit = (1 << bits) - 1 if bits in (32, 64) else None
    width = header_width(bits)
    start = check_uint('start', start, addr_limit)
    end = check_uint('end', end, addr_limit)
    if end < start:
        raise FormatInputError(f'end {end:#x} is below start {start:#x}')
    if not isinstance(perms, str) or not _PERMS.fullmatch(perms):
        raise FormatInputError(f'perms must look like "rw-p", got {perms!r}')
    offset = check_uint('offset', offset)
    major = check_uint('major', major, (1 << 12) - 1)
    minor = check_uint('minor', minor, (1 << 20) - 1)
    inode = check_uint('inode', inode)
    head = (f'{hex_width(start, 8)}-{hex_width(end, 8)} {perms} {hex_width(offset, 8)} '
            f'{hex_width(major, 2)}:{hex_width(minor, 2)} {inode} ')
    if name is None:
        return head + '\n'
    name = check_text('name', name, allow_newline=True)
    if not name:
        raise FormatInputError('name must be None or a non-empty str')
    return head + ' ' * max(width - len(head), 0) + ' ' + mangle_path(name, '\n') + '\n'


def vmflags_string(flags, bits=64):
    """The VmFlags mnemonics of ``flags`` in ascending bit order, each
    followed by one space (``show_smap_vma_flags()``); ``""`` if empty."""
    if isinstance(flags, str):
        raise FormatInputError('flags must be a collection of mnemonics, not a str')
    ordered = []
    for flag in set(flags):
        bit = VM_FLAG_BITS.get(flag)
        if bit is None:
            raise FormatInputError(f'unknown VmFlags mnemonic {flag!r}')
        if bit >= bits:
            raise FormatInputError(f'VmFlags mnemonic {flag!r} (bit {bit}) does not exist on {bits}-bit')
        ordered.append((bit, flag))
    return ''.join(f'{flag} ' for _, flag in sorted(ordered))
