"""Page and size units of the emulated machine (x86_64, 4K base pages).

Sizes in scenarios and configs are written as integers (bytes) or as strings
with a binary suffix ("4K", "64K", "2M", "1G"); size_bytes() and size_name()
convert between the two.
"""
import re

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_ORDER = 9                       # HPAGE_PMD_ORDER on x86_64 with 4K pages
PMD_SIZE = PAGE_SIZE << PMD_ORDER   # HPAGE_PMD_SIZE, 2M
HPAGE_PMD_NR = 1 << PMD_ORDER

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_SUFFIX = {'': 1, 'K': KiB, 'M': MiB, 'G': GiB, 'T': TiB}
# "4096", "4K", "4k", "4KB", "4KiB", "2 M"
_SIZE_RE = re.compile(r'^\s*(\d+)\s*(?:([KMGT])(?:i?B)?|B?)\s*$', re.IGNORECASE)


def size_bytes(value):
    """Bytes of a size given as an int or a suffixed string.

    Raises ValueError (with the reason) for anything else, including
    booleans, floats and negative or malformed strings."""
    if isinstance(value, bool):
        raise ValueError('not a size: %r' % (value,))
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            if len(m.group(1)) > 30:
                raise ValueError('%s...: too many digits for a size' % value.strip()[:20])
            return int(m.group(1)) * _SUFFIX[(m.group(2) or '').upper()]
    raise ValueError('not a size: %r (use bytes or a number with K, M, G or T)' % (value,))


def size_name(nbytes):
    """The short spelling of a size: 65536 -> '64K', 2097152 -> '2M'."""
    for suffix, unit in (('T', TiB), ('G', GiB), ('M', MiB), ('K', KiB)):
        if nbytes and nbytes % unit == 0:
            return '%d%s' % (nbytes // unit, suffix)
    return str(nbytes)


def is_power_of_2(n):
    return n > 0 and n & (n - 1) == 0
