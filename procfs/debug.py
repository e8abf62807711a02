"""sys/kernel/debug/mmemu/{folios,mm_ids}: the folio and MM-ID state the
kernel keeps and /proc only hints at (an mmemu extension, served
root-only like debugfs).  Values are what the kernel's accessors return
(folio_large_mapcount(), folio_entire_mapcount(), folio_mm_id(), the
per-slot mapcounts with their +1 bias removed)."""
from mmcore import query
from .formats.debugfs import table_text


def _large(v, large):
    return str(int(v)) if large else '-'


def folio_columns(k):
    st = query.folio_state(k)
    return st, (['pfn', 'order', 'kind', 'flags', 'refcount', 'pincount', 'mapcount',
                 'large_mapcount'] + [name for name, _ in st['config_columns']] +
                ['mm0_id', 'mm0_mapcount', 'mm1_id', 'mm1_mapcount', 'maybe_shared',
                 'partially_mapped', 'deferred_list', 'mappers'])


def folio_rows(k):
    st, columns = folio_columns(k)
    rows = []
    for i in range(len(st['pfn'])):
        lg = bool(st['large'][i])
        ids, cnt = st['mm_id'][i], st['mm_id_mapcount'][i]
        mappers = st['mappers'][i]
        rows.append(
            [str(int(st['pfn'][i])), str(int(st['order'][i])), st['kind'][i],
             '|'.join(query.folio_flag_names(st['flags'][i])) or '-',
             str(int(st['refcount'][i])), _large(st['pincount'][i], lg),
             str(int(st['mapcount'][i])), _large(st['large_mapcount'][i], lg)] +
            [_large(vals[i], lg) for _, vals in st['config_columns']] +
            [_large(ids[0], lg), _large(cnt[0], lg), _large(ids[1], lg), _large(cnt[1], lg),
             _large(st['maybe_shared'][i], lg), str(int(st['partially_mapped'][i])),
             str(int(st['deferred_list'][i])),
             ','.join('%d:%d' % (pid, n) for pid, n in sorted(mappers.items())) or '-'])
    return columns, rows


def folios(k):
    return table_text(*folio_rows(k)).encode()


def mm_ids(k):
    rows = [[str(v) for v in r] for r in query.mm_id_usage(k)]
    return table_text(['pid', 'mm_id', 'slot0_folios', 'slot1_folios', 'untracked_folios'],
                      rows).encode()
