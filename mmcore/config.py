"""Kernel build configurations (configs/kernels/*.yaml).

A config holds the build options that change mm accounting: whether
per-page mapcounts of large folios are kept (CONFIG_PAGE_MAPCOUNT versus
CONFIG_NO_PAGE_MAPCOUNT) and the word size (CONFIG_64BIT), which sets the
widths of MM IDs and per-MM mapcounts (semantics.md sections 1, 2.1, 11).

`rmap: total_mapped_pages` selects a third kernel: 6.18 with the 2026 RFC
"mm/rmap: support arbitrary folio mappings" (message-id
20260412-mapcount-v1-0-05e8dfab52e0@kernel.org) applied.  The RFC deletes
both CONFIG_PAGE_MAPCOUNT and CONFIG_NO_PAGE_MAPCOUNT (patch 07), so such a
config names neither.
"""
from dataclasses import dataclass
import os

import yaml

KNOWN_KEYS = {'name', 'release', 'description', 'CONFIG_64BIT', 'CONFIG_TRANSPARENT_HUGEPAGE',
              'CONFIG_PAGE_MAPCOUNT', 'CONFIG_NO_PAGE_MAPCOUNT', 'rmap'}
# rmap: the folio-level counter next to the large mapcount
RMAP_ENTIRE_MAPCOUNT = 'entire_mapcount'           # Linux 6.18
RMAP_TOTAL_MAPPED_PAGES = 'total_mapped_pages'     # the 2026 RFC
RMAP_KINDS = (RMAP_ENTIRE_MAPCOUNT, RMAP_TOTAL_MAPPED_PAGES)


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class KernelConfig:
    name: str
    page_mapcount: bool          # CONFIG_PAGE_MAPCOUNT=y
    bits: int = 64               # CONFIG_64BIT ? 64 : 32
    release: str = '6.18.44-mmemu'
    rmap: str = RMAP_ENTIRE_MAPCOUNT

    @property
    def mm_id_bits(self):
        """MM_ID_BITS: 31 on 64-bit, 15 on 32-bit (include/linux/mm_types.h)."""
        return 31 if self.bits == 64 else 15

    @property
    def mm_id_max(self):
        return (1 << self.mm_id_bits) - 1

    @property
    def mm_id_mapcount_max(self):
        """Largest logical per-MM mapcount before the signed stored value
        (logical - 1) overflows: 2^31 on 64-bit, 2^15 = 32768 on 32-bit."""
        return 1 << (31 if self.bits == 64 else 15)


def _yes(v, key, path):
    if v in (True, 'y', 'Y', 'yes'):
        return True
    if v in (False, 'n', 'N', 'no', None):
        return False
    raise ConfigError('%s: %s must be y or n, not %r' % (path, key, v))


def load_kernel_config(path):
    """Reads one configs/kernels/*.yaml file."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError('%s: cannot read kernel config: %s' % (path, e.strerror))
    except yaml.YAMLError as e:
        raise ConfigError('%s: YAML error: %s' % (path, e))
    if not isinstance(doc, dict):
        raise ConfigError('%s: a kernel config must be a mapping' % path)
    for k in doc:
        if k not in KNOWN_KEYS:
            raise ConfigError('%s: unknown key %r' % (path, k))
    name = doc.get('name') or os.path.splitext(os.path.basename(path))[0]
    rmap = doc.get('rmap', RMAP_ENTIRE_MAPCOUNT)
    if rmap not in RMAP_KINDS:
        raise ConfigError('%s: rmap must be one of %s, not %r' % (path, ', '.join(RMAP_KINDS), rmap))
    if rmap == RMAP_TOTAL_MAPPED_PAGES:
        return _rfc_config(doc, path, str(name))
    pm = _yes(doc.get('CONFIG_PAGE_MAPCOUNT', True), 'CONFIG_PAGE_MAPCOUNT', path)
    npm = _yes(doc.get('CONFIG_NO_PAGE_MAPCOUNT', not pm), 'CONFIG_NO_PAGE_MAPCOUNT', path)
    if pm == npm:
        raise ConfigError('%s: exactly one of CONFIG_PAGE_MAPCOUNT and '
                          'CONFIG_NO_PAGE_MAPCOUNT must be y' % path)
    if not _yes(doc.get('CONFIG_TRANSPARENT_HUGEPAGE', True), 'CONFIG_TRANSPARENT_HUGEPAGE', path):
        raise ConfigError('%s: only THP=y kernels are emulated (MM IDs need it)' % path)
    bits = 64 if _yes(doc.get('CONFIG_64BIT', True), 'CONFIG_64BIT', path) else 32
    return KernelConfig(name=str(name), page_mapcount=pm, bits=bits,
                        release=str(doc.get('release', '6.18.44-mmemu')))


def _rfc_config(doc, path, name):
    """A kernel with the RFC applied: it has no CONFIG_PAGE_MAPCOUNT and no
    CONFIG_NO_PAGE_MAPCOUNT any more (RFC patch 07), so naming either is a
    mistake in the file."""
    for key in ('CONFIG_PAGE_MAPCOUNT', 'CONFIG_NO_PAGE_MAPCOUNT'):
        if key in doc:
            raise ConfigError('%s: %s does not exist with rmap: %s (the RFC removes it)'
                              % (path, key, RMAP_TOTAL_MAPPED_PAGES))
    if not _yes(doc.get('CONFIG_TRANSPARENT_HUGEPAGE', True), 'CONFIG_TRANSPARENT_HUGEPAGE', path):
        raise ConfigError('%s: only THP=y kernels are emulated (MM IDs need it)' % path)
    bits = 64 if _yes(doc.get('CONFIG_64BIT', True), 'CONFIG_64BIT', path) else 32
    return KernelConfig(name=name, page_mapcount=False, bits=bits,
                        release=str(doc.get('release', '6.18.44-mmemu')),
                        rmap=RMAP_TOTAL_MAPPED_PAGES)


PAGE_MAPCOUNT = KernelConfig('page_mapcount', page_mapcount=True)
NO_PAGE_MAPCOUNT = KernelConfig('no_page_mapcount', page_mapcount=False)
TOTAL_MAPPED_PAGES = KernelConfig('total_mapped_pages', page_mapcount=False,
                                  rmap=RMAP_TOTAL_MAPPED_PAGES)
