"""Kernel build configurations (configs/kernels/*.yaml).

A config holds the build options that change mm accounting: whether
per-page mapcounts of large folios are kept (CONFIG_PAGE_MAPCOUNT versus
CONFIG_NO_PAGE_MAPCOUNT) and the word size (CONFIG_64BIT), which sets the
widths of MM IDs and per-MM mapcounts (semantics.md sections 1, 2.1, 11).
"""
from dataclasses import dataclass
import os

import yaml

KNOWN_KEYS = {'name', 'release', 'description', 'CONFIG_64BIT', 'CONFIG_TRANSPARENT_HUGEPAGE',
              'CONFIG_PAGE_MAPCOUNT', 'CONFIG_NO_PAGE_MAPCOUNT'}


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class KernelConfig:
    name: str
    page_mapcount: bool          # CONFIG_PAGE_MAPCOUNT=y
    bits: int = 64               # CONFIG_64BIT ? 64 : 32
    release: str = '6.18.44-mmemu'

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


PAGE_MAPCOUNT = KernelConfig('page_mapcount', page_mapcount=True)
NO_PAGE_MAPCOUNT = KernelConfig('no_page_mapcount', page_mapcount=False)
