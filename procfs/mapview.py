"""`mmemu map`: a picture of each process's address space, one row per
kernel config, folios as blocks sized by order, coloured by what the
config tells userspace (pagemap bit 56 / smaps private) against who really
maps each page (the page-table entries of every process):

  exclusive      the config says exclusive, one entry maps the page
  shared         the config says shared, several entries map it
  false-shared   the config says shared, one entry maps it: the "maybe
                 mapped shared" answers of CONFIG_NO_PAGE_MAPCOUNT
  false-excl     the config says exclusive, several entries map it
  zero           the shared zero page / huge zero page
  mixed          pages of one folio run in different classes

A terminal gets a compact text map (one letter per class); --svg and
--html write self-contained files (no script, no external resource).
"""
from dataclasses import dataclass
from html import escape

import numpy as np

from mmcore import query

CLASSES = [
    ('exclusive', 'E', '32', '#3a9d23', 'exclusive (the config says so, and one entry maps it)'),
    ('shared', 'S', '34', '#2f6fd0', 'shared (the config says so, and several entries map it)'),
    ('false-shared', 'F', '1;31', '#e8590c',
     'maybe shared but actually exclusive (a false "shared")'),
    ('false-excl', 'X', '35', '#b5179e', 'exclusive but actually shared (a false "exclusive")'),
    ('zero', 'Z', '90', '#adb5bd', 'zero page'),
    ('mixed', 'M', '36', '#15aabf', 'pages of the folio in different classes'),
]
LETTER = {c[0]: c[1] for c in CLASSES}
ANSI = {c[0]: c[2] for c in CLASSES}
FILL = {c[0]: c[3] for c in CLASSES}
SMALL_RUN = 8                 # text: consecutive small folios of a class shown, then ×N


class NoSuchProcess(Exception):
    """The map of a pid the machine does not run."""


@dataclass
class Block:
    """A run of pages of one VMA in one folio (or a hole)."""
    index: int                # first page index in the VMA
    pages: int
    head: int                 # -1: not present
    order: int
    cls: str
    pfn: int
    mappers: dict
    partial: bool             # fewer pages than the folio has


def page_classes(pv, true_counts):
    cls = np.full(len(pv.pfn), '', dtype=object)
    normal = pv.normal
    really_shared = np.zeros(len(pv.pfn), dtype=bool)
    really_shared[normal] = true_counts[pv.pfn[normal]] > 1
    says_excl = pv.pm_exclusive
    cls[normal & says_excl & ~really_shared] = 'exclusive'
    cls[normal & ~says_excl & really_shared] = 'shared'
    cls[normal & ~says_excl & ~really_shared] = 'false-shared'
    cls[normal & says_excl & really_shared] = 'false-excl'
    cls[pv.zero] = 'zero'
    return cls


def vma_blocks(k, vma, true_counts, mappers_of):
    pv = query.vma_pages(k, vma)
    cls = page_classes(pv, true_counts)
    out = []
    n = len(pv.pfn)
    i = 0
    while i < n:
        h = int(pv.head[i])
        j = i + 1
        if h < 0:
            while j < n and pv.head[j] < 0:
                j += 1
            out.append(Block(i, j - i, -1, 0, '', -1, {}, False))
        else:
            while j < n and pv.head[j] == h and pv.pfn[j] == pv.pfn[j - 1] + 1:
                j += 1
            kinds = set(cls[i:j])
            order = int(k.mem.order[h])
            out.append(Block(i, j - i, h, order, kinds.pop() if len(kinds) == 1 else 'mixed',
                             int(pv.pfn[i]), mappers_of(h), j - i < (1 << order)))
        i = j
    return out


def layout(kernels, pid=None):
    """{pid: (comm, [(vma label, {config: [Block]})])}, pids in order."""
    out = {}
    for cfg, k in kernels:
        true_counts = query.true_page_mapcounts(k)
        heads = k.mem.allocated_folio_heads()
        mappers = dict(zip(heads.tolist(), query.folio_mappers(k, heads)))
        pids = sorted(k.processes) if pid is None else [pid]
        for p in pids:
            if p not in k.processes:
                raise NoSuchProcess('no process %d (pids: %s)'
                                    % (p, ', '.join(str(q) for q in sorted(k.processes))))
            proc = k.processes[p]
            comm, vmas = out.setdefault(p, (proc.comm, {}))
            for v in proc.mm.vmas:
                label = '%s %#x-%#x' % (v.name or '[anon]', v.start, v.end)
                vmas.setdefault(label, {})[cfg.name] = vma_blocks(
                    k, v, true_counts, lambda h: mappers.get(h, {}))
    return {p: (comm, list(vmas.items())) for p, (comm, vmas) in sorted(out.items())}


# --- text -----------------------------------------------------------------------------------

def _cells(blocks, color):
    out = []
    i = 0
    while i < len(blocks):
        b = blocks[i]
        if b.head < 0:
            out.append('.')
            i += 1
            continue
        if b.order == 0:
            j = i
            while j < len(blocks) and blocks[j].head >= 0 and blocks[j].order == 0 and \
                    blocks[j].cls == b.cls:
                j += 1
            run = j - i
            text = LETTER[b.cls] * min(run, SMALL_RUN) + ('×%d' % run if run > SMALL_RUN else '')
            i = j
        else:
            letter = LETTER[b.cls]
            text = '[' + (letter.lower() if b.partial else letter) * (b.order + 1) + ']'
            i += 1
        out.append('\x1b[%sm%s\x1b[0m' % (ANSI[b.cls], text) if color else text)
    return ''.join(out)


def text_map(data, color=False):
    lines = ['legend: ' + ', '.join('%s %s' % (c[1], c[0]) for c in CLASSES) +
             ', [..] a large folio (width: order + 1), lower case: partly in this VMA, . hole, '
             '×N: N small folios']
    for pid, (comm, vmas) in data.items():
        lines.append('pid %d (%s)' % (pid, comm))
        for label, per_cfg in vmas:
            lines.append('  ' + label)
            width = max(len(c) for c in per_cfg)
            for cfg, blocks in sorted(per_cfg.items()):
                lines.append('    %-*s %s' % (width, cfg, _cells(blocks, color)))
    return '\n'.join(lines) + '\n'


# --- SVG / HTML -----------------------------------------------------------------------------

CELL = 4                      # px per order step
ROW_H = 18
LABEL_W = 150


def _block_w(b):
    return CELL * (b.order + 1) if b.head >= 0 else CELL


def _title(b, cfg):
    if b.head < 0:
        return 'not present: %d pages' % b.pages
    who = ', '.join('pid %d: %d pages' % (p, n) for p, n in sorted(b.mappers.items()))
    return '%s: pfn %d (folio %d, order %d)%s: %s; mapped by %s' % (
        cfg, b.pfn, b.head, b.order, ', %d of its pages here' % b.pages if b.partial else '',
        b.cls, who or 'nobody')


def svg_map(data):
    parts, y, width = [], 10, 0
    for pid, (comm, vmas) in data.items():
        parts.append('<text class="pid" x="4" y="%d">pid %d (%s)</text>' % (y + 12, pid, escape(comm)))
        y += ROW_H + 4
        for label, per_cfg in vmas:
            parts.append('<text class="vma" x="12" y="%d">%s</text>' % (y + 12, escape(label)))
            y += ROW_H
            for cfg, blocks in sorted(per_cfg.items()):
                parts.append('<text class="cfg" x="20" y="%d">%s</text>' % (y + 12, escape(cfg)))
                x = LABEL_W
                for b in blocks:
                    w = _block_w(b)
                    if b.head < 0:
                        parts.append('<rect class="hole" x="%d" y="%d" width="%d" height="%d">'
                                     '<title>%s</title></rect>'
                                     % (x, y + 7, w, 2, escape(_title(b, cfg))))
                    else:
                        parts.append('<rect class="folio %s%s" data-pfn="%d" data-order="%d" '
                                     'x="%d" y="%d" width="%d" height="%d" fill="%s">'
                                     '<title>%s</title></rect>'
                                     % (b.cls, ' partial' if b.partial else '', b.head, b.order,
                                        x, y + 2, w - 1, ROW_H - 4, FILL[b.cls],
                                        escape(_title(b, cfg))))
                    x += w
                width = max(width, x)
                y += ROW_H
            y += 6
        y += 8
    legend_y = y + 4
    for i, c in enumerate(CLASSES):
        parts.append('<rect x="10" y="%d" width="12" height="12" fill="%s"/>'
                     '<text class="legend" x="28" y="%d">%s</text>'
                     % (legend_y + i * 16, c[3], legend_y + i * 16 + 11, escape(c[4])))
    height = legend_y + len(CLASSES) * 16 + 10
    width = max(width + 10, 520)
    style = ('text{font-family:monospace;font-size:11px}.pid{font-weight:bold;font-size:13px}'
             '.hole{fill:#dee2e6}.folio.partial{stroke:#000;stroke-dasharray:2,1}')
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">'
            '<style>%s</style>%s</svg>\n' % (width, height, width, height, style, ''.join(parts)))


def html_map(data, title='mmemu map'):
    return ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>%s</title>'
            '<style>body{font-family:sans-serif;margin:12px}p{font-size:13px}</style></head>'
            '<body><h1>%s</h1><p>One row per kernel config; each block is a folio (wider for '
            'higher orders), coloured by what the config tells userspace (pagemap bit 56, '
            'smaps private) against who really maps the page. Hover a block for its PFN and '
            'mappers.</p>\n%s</body></html>\n' % (escape(title), escape(title), svg_map(data)))


def render(kernels, pid=None, fmt='text', color=False, title='mmemu map'):
    """The map of `pid` (every process when None) as text, svg or html."""
    data = layout(kernels, pid)
    if fmt == 'svg':
        return svg_map(data)
    if fmt == 'html':
        return html_map(data, title)
    return text_map(data, color)
