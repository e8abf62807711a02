"""`mmemu explain PID ADDR`: for one page, per config, the folio, its
MM-ID slots, who maps it, and why each interface says what it says
(kpagecount, pagemap bit 56, smaps private/shared and PSS, numa_maps),
with the steps that made the slot state.  From mmcore.query.page_facts()
and the kernel's slot history; the formulas are keyed by the kernel
function the mapcount policy names."""
from mmcore import query
from mmcore.memory import PAGE_SIZE

# kernel function / rule -> how its inputs give the value
MAPCOUNT_FORMULAS = {
    'folio_precise_page_mapcount':
        lambda t, v: 'folio_precise_page_mapcount() = page->_mapcount + 1 (%d) + '
                     'folio_entire_mapcount() (%d) = %d' % (t['page_mapcount'],
                                                            t['entire_mapcount'], v),
    'folio_average_page_mapcount':
        lambda t, v: 'folio_average_page_mapcount() = ((large_mapcount %d - entire %d) + '
                     '%d/2) >> %d, + entire %d, at least 1 when mapped = %d'
                     % (t['large_mapcount'], t['entire_mapcount'], 1 << t['order'], t['order'],
                        t['entire_mapcount'], v),
    'folio_total_mapped_pages_average':
        lambda t, v: 'folio_average_page_mapcount() of the RFC = (total_mapped_pages %d + '
                     '%d/2) >> %d, at least 1 when mapped = %d'
                     % (t['total_mapped_pages'], 1 << t['order'], t['order'], v),
    'page_mapcount':
        lambda t, v: 'a small folio: page->_mapcount + 1 = %d' % t['page_mapcount'],
}
EXCLUSIVE_RULES = {
    'precise_mapcount_is_1':
        lambda t, v: 'folio_precise_page_mapcount() == 1 (it is %d)' % t['precise_mapcount'],
    'not_folio_maybe_mapped_shared':
        lambda t, v: '!folio_maybe_mapped_shared(): large_mapcount %d %s 1 and the shared '
                     'bit is %s' % (t['large_mapcount'], '>' if t['large_mapcount'] > 1 else '<=',
                                    'set' if t['maybe_shared'] else 'clear'),
    'page_mapcount_is_1':
        lambda t, v: 'a small folio: page mapcount == 1 (it is %d)' % t['page_mapcount'],
}


def _who(pid, mm_id):
    return 'pid %d (mm %d)' % (pid, mm_id) if pid >= 0 else 'mm %d (released)' % mm_id


def _slot(s):
    mm_id, count, pid = s
    return 'free' if mm_id == 0 else '%s, %d mappings' % (_who(pid, mm_id), count)


def _event_text(e, prev):
    who = _who(e.pid, e.mm_id)
    slot_of = {mid: i for i, mid in enumerate(e.ids) if mid}
    if e.op == 'new':
        text = '%s took slot 0 (a new folio)' % who
    elif e.untracked:
        holders = ' and '.join(_who(p, m) for p, m in zip(prev.get('pids', (-1, -1)), e.ids))
        text = '%s mapped it untracked: both slots were held (%s)' % (who, holders)
    elif e.op == 'add' and e.mm_id in slot_of:
        text = '%s took slot %d' % (who, slot_of[e.mm_id])
    elif e.op == 'add':
        text = '%s overflowed its slot mapcount and lost the slot' % who
    else:
        text = '%s gave up its slot' % who
    if e.shared != prev.get('shared', False):
        text += '; the shared bit was %s' % ('set' if e.shared else 'cleared')
    elif e.op == 'sub' and e.shared:
        text += ('; the shared bit stays set: the other slot does not hold every mapping '
                 '(folio_sub_large_mapcount())')
    return text


def _history_lines(facts, step_names):
    out, prev = [], {}
    for e in facts.history:
        name = step_names.get(e.step, 'boot' if e.step == 0 else 'step %d' % e.step)
        out.append('    step %d (%s): %s' % (e.step, name, _event_text(e, prev))
                   if e.step else '    at boot: %s' % _event_text(e, prev))
        pids = prev.get('pids', (-1, -1))
        if e.op in ('new', 'add') and not e.untracked and e.mm_id in e.ids:
            pids = tuple(e.pid if mid == e.mm_id else (pids[i] if mid else -1)
                         for i, mid in enumerate(e.ids))
        elif e.op == 'new':
            pids = (e.pid, -1)
        else:
            pids = tuple(p if mid else -1 for p, mid in zip(pids, e.ids))
        prev = {'shared': e.shared, 'pids': pids}
    return out


def _verdict(facts):
    """Why the config answers shared or exclusive, in one sentence."""
    answer = 'exclusive' if facts.pm_exclusive else 'shared'
    truth = ('really shared: %d page-table entries map this page' % facts.page_mappers
             if facts.page_mappers > 1 else 'really exclusive: only pid %d maps this page'
             % facts.pid)
    if not facts.order or facts.exclusive_terms[0] != 'not_folio_maybe_mapped_shared':
        return '%s, by the precise mapcount; %s' % (answer, truth)
    if facts.pm_exclusive:
        return 'exclusive: folio_maybe_mapped_shared() is false; %s' % truth
    cause = None
    for i, e in enumerate(facts.history):
        if e.untracked:
            holders = [ev for ev in facts.history[:i] if not ev.untracked and ev.op != 'sub']
            cause = ('pid %d took no slot (untracked) while %s held both slots at step %d'
                     % (e.pid, ' and '.join('pid %d' % ev.pid for ev in holders[-2:]) or
                        'two MMs', e.step))
            break
    if cause is None:
        sets = [e for e in facts.history if e.shared]
        if sets:
            e = sets[0]
            cause = 'pid %d took the second slot at step %d' % (e.pid, e.step)
    sentence = 'maybe mapped shared, because %s' % (cause or 'the shared bit is set')
    if facts.page_mappers <= 1:
        sentence += ('; a false "shared": the bit stays set until a slot is freed while the '
                     'other slot holds every mapping (folio_sub_large_mapcount()), and %s' % truth)
    else:
        sentence += '; %s' % truth
    return sentence


def explain_config(name, facts, step_names):
    if facts is None:
        return ['%s: no VMA covers this address' % name]
    v = facts.vma
    head = ['%s: pid %d, %#x: page %d of %s %#x-%#x' % (name, facts.pid, facts.addr, facts.index,
                                                       v.name or '[anon]', v.start, v.end)]
    if facts.pfn < 0:
        return head + ['  not present: no folio (every interface shows an unmapped page)']
    lines = head + ['  folio: pfn %d (head %d), order %d (%d kB), %s, refcount %d, flags %s%s'
                    % (facts.pfn, facts.head, facts.order, (PAGE_SIZE << facts.order) >> 10,
                       facts.kind, facts.refcount, '|'.join(facts.flags) or '-',
                       ', mapped by a PMD' if facts.pmd else '')]
    if facts.order:
        cols = ', '.join('%s %d' % c for c in facts.config_columns)
        lines.append('  slots: mm0 = %s; mm1 = %s; maybe_shared = %d; large_mapcount %d%s'
                     % (_slot(facts.slots[0]), _slot(facts.slots[1]), facts.maybe_shared,
                        facts.large_mapcount, ', ' + cols if cols else ''))
    lines.append('  mapped by: %s; this page: %d page-table entries'
                 % (', '.join('pid %d (%d pages)' % (p, n) for p, n in sorted(facts.mappers.items()))
                    or 'nobody', facts.page_mappers))
    if facts.zero:
        lines.append('  the zero page: no rmap, kpagecount 0, not counted in smaps Rss mapcounts')
        return lines
    fn, terms = facts.mapcount_terms
    lines.append('  kpagecount = %d: %s' % (facts.kpagecount,
                                            MAPCOUNT_FORMULAS[fn](terms, facts.kpagecount)))
    rule, terms = facts.exclusive_terms
    lines.append('  pagemap bit 56 (PM_MMAP_EXCLUSIVE) = %d: %s'
                 % (facts.pm_exclusive, EXCLUSIVE_RULES[rule](terms, facts.pm_exclusive)))
    m = facts.mapcount
    pss = PAGE_SIZE if m < 2 else PAGE_SIZE / m
    lines.append('  smaps: %s (smaps_account(): m = %d), PSS share %s'
                 % ('Private' if facts.private else 'Shared', m,
                    ('%d bytes' % pss if m < 2 else '%g bytes (4096 / %d)' % (pss, m))))
    lines.append('  numa_maps: the page counts %d towards mapmax' % facts.numa_mapcount)
    hist = _history_lines(facts, step_names)
    if hist:
        lines.append('  slot history:')
        lines += hist
    lines.append('  verdict: ' + _verdict(facts))
    return lines


def explain(kernels, pid, addr, step_names):
    """Lines of `mmemu explain` over [(config, Kernel)]."""
    out = []
    for cfg, k in kernels:
        if pid not in k.processes:
            raise KeyError(pid)
        out += explain_config(cfg.name, query.page_facts(k, pid, addr), step_names)
    return out
