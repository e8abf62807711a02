"""`expect` steps, checked without a replay (`mmemu check`).

The loader (mmcore.scenario) parses an `expect` step's structure and its
references (pid, vma, offsets, snapshot labels, cgroups); ``validate()``
checks the rest against what the renderers print and the kernel profiles
that exist: the field names of each subject, the shape of every value,
the config names.  procfs.expect verifies the values on a replay.
"""
import re
from mmcore.scenario import Expect, ScenarioError
from .formats.maps import maps_line
from .formats.memcg import MEMCG_V1_STAT_KEYS, MEMCG_V2_STAT_KEYS
from .formats.smaps import SmapsCounters, smaps_block, smaps_rollup_text
from .formats.system import MEMINFO_KEYS, VMSTAT_KEYS
from .view import PAGE_SIZE, parse_colon_lines, parse_smaps

NUMA_TOKENS = ('mapmax', 'anon', 'dirty', 'mapped', 'active', 'writeback', 'swapcache',
               'N0', 'kernelpagesize_kB', 'file', 'heap', 'stack', 'huge', 'policy')
PAGE_FIELDS = ('present', 'kpagecount', 'bit56', 'bit61', 'same_pfn')
PAGES_COUNTS = ('bit56_pages', 'present_pages')
FOLIO_INTS = ('nr_pages', 'order', 'refcount', 'large_mapcount', 'entire_mapcount',
              'total_mapped_pages')
FOLIO_BOOLS = ('maybe_shared', 'partially_mapped')
RUN_RE = re.compile(r'^\s*(-?\d+)\s*\*\s*(\d+)\s*$')


def _smaps_names():
    zero = SmapsCounters()
    block = smaps_block(maps_line(0, PAGE_SIZE, 'rw-p'), zero, 4, 0, set())
    rollup = smaps_rollup_text(0, PAGE_SIZE, zero).split('\n', 1)[1]
    return tuple(parse_smaps(block)[0]['fields']), tuple(parse_colon_lines(rollup))


SMAPS_FIELDS, ROLLUP_FIELDS = _smaps_names()

# subject -> field names it states
FIELDS = {
    'smaps': SMAPS_FIELDS,
    'smaps_rollup': ROLLUP_FIELDS,
    'numa_maps': NUMA_TOKENS,
    'meminfo': tuple(k for k, _ in MEMINFO_KEYS),
    'vmstat': tuple(VMSTAT_KEYS),
    'memcg': tuple(dict.fromkeys(MEMCG_V1_STAT_KEYS + MEMCG_V2_STAT_KEYS)),
    'pages': PAGE_FIELDS + PAGES_COUNTS,
    'folio': FOLIO_INTS + FOLIO_BOOLS + ('slots', 'kpagecount'),
}
PER_ITEM = {('pages', f) for f in PAGE_FIELDS} | {('folio', 'kpagecount')}
BIT_FIELDS = {'present', 'bit56', 'bit61', 'same_pfn'}


def _fail(sc, line, msg):
    return ScenarioError('%s:%d: %s' % (sc.path, line, msg), sc.path, line)


def _per_config(value):
    return value if isinstance(value, dict) else None


def _check_value(sc, st, name, value, line):
    """Raises ScenarioError unless `value` has a shape `name` can take."""
    where = 'step %d (expect %s): %s' % (st.index, st.subject, name)
    per_item = (st.subject, name) in PER_ITEM
    if isinstance(value, list):
        if not per_item:
            raise _fail(sc, line, '%s: a list is only for per-page fields (%s)'
                        % (where, ', '.join(sorted(f for _, f in PER_ITEM))))
        for item in value:
            if isinstance(item, str):
                if not RUN_RE.match(item):
                    raise _fail(sc, line, '%s: list item %r is neither a number nor V*N'
                                % (where, item))
            elif isinstance(item, bool) or not isinstance(item, int):
                raise _fail(sc, line, '%s: list item %r is not a number' % (where, item))
        return
    if isinstance(value, str) and name in BIT_FIELDS:
        if not value.replace(' ', '').replace('_', '') or \
                set(value.replace(' ', '').replace('_', '')) - set('01'):
            raise _fail(sc, line, "%s: %r is not a string of 0 and 1 (one per page)"
                        % (where, value))
        return
    if name == 'slots':
        if isinstance(value, str) and _parse_slots(value) is not None:
            return
        raise _fail(sc, line, "%s: expected two slots like '100:16 | -', got %r" % (where, value))
    if st.subject == 'numa_maps' and value is None:
        return                              # the token is not printed
    if name in FOLIO_BOOLS or name in ('heap', 'stack', 'huge'):
        if not isinstance(value, bool):
            raise _fail(sc, line, '%s: expected true or false, got %r' % (where, value))
        return
    if st.subject == 'numa_maps' and name in ('file', 'policy'):
        if not isinstance(value, str):
            raise _fail(sc, line, '%s: expected a string, got %r' % (where, value))
        return
    if st.subject == 'smaps' and name == 'VmFlags':
        if not isinstance(value, str):
            raise _fail(sc, line, '%s: expected a string, got %r' % (where, value))
        return
    if name in BIT_FIELDS and isinstance(value, bool):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(sc, line, '%s: expected a number, got %r' % (where, value))


def validate(sc, config_names):
    """Checks the field names, values and config names of every `expect`
    step of `sc` (config names: those of the kernel profiles available;
    None leaves config names unchecked)."""
    known = set(config_names) if config_names is not None else None
    for st in sc.steps:
        if not isinstance(st, Expect):
            continue
        for c in st.configs or ():
            if known is not None and c not in known:
                raise _fail(sc, st.line, 'step %d (expect): configs: unknown config %r '
                            '(configs: %s)' % (st.index, c, ', '.join(sorted(known))))
        names = FIELDS[st.subject]
        for name, value, line in st.fields:
            if name not in names:
                close = [n for n in names if n.lower() == name.lower()]
                raise _fail(sc, line, 'step %d (expect %s): unknown field %r (%s)' % (
                    st.index, st.subject, name,
                    'did you mean %r?' % close[0] if close else 'expected one of: %s'
                    % ', '.join(names)))
            if name == 'same_pfn' and 'since' not in st.target:
                raise _fail(sc, line, 'step %d (expect pages): same_pfn needs since: LABEL '
                            '(the snapshot whose PFNs the pages are compared with)' % st.index)
            per = _per_config(value)
            for c, v in (per.items() if per is not None else [(None, value)]):
                if c is not None and known is not None and c not in known:
                    raise _fail(sc, line, 'step %d (expect %s): %s: unknown config %r '
                                '(configs: %s)' % (st.index, st.subject, name, c,
                                                   ', '.join(sorted(known))))
                if c is not None and st.configs and c not in st.configs:
                    raise _fail(sc, line, 'step %d (expect %s): %s: config %r is not among '
                                'the step\'s configs (%s)' % (st.index, st.subject, name, c,
                                                              ', '.join(st.configs)))
                _check_value(sc, st, name, v, line)


def _parse_slots(text):
    """'100:16 | 101:15', '- | -' -> ((100, 16), (101, 15)), (None, None)."""
    parts = [p.strip() for p in str(text).split('|')]
    if len(parts) != 2:
        return None
    out = []
    for p in parts:
        if p == '-':
            out.append(None)
            continue
        m = re.fullmatch(r'(\d+)\s*:\s*(\d+)', p)
        if not m:
            return None
        out.append((int(m[1]), int(m[2])))
    return tuple(out)
