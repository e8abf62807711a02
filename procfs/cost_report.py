"""`mmemu cost`: what each step of a scenario cost the kernel's code under
each config (mmcore/cost.py counts it), as a text table, JSON or an SVG
chart with one panel per counter, bars per step, one colour per config."""
import json
from xml.sax.saxutils import escape

from mmcore.cost import COUNTERS

COLOURS = ('#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b')
LABELS = dict(COUNTERS)


def step_name(step):
    return '%d %s (line %d)' % (step.index, step.op, step.line)


def _used_counters(per_config):
    """Counter keys that are non-zero somewhere, in COUNTERS order."""
    seen = {key for rows in per_config.values() for _, c in rows for key in c if c[key]}
    return [key for key, _ in COUNTERS if key in seen]


def _steps(per_config):
    first = next(iter(per_config.values()))
    return [step for step, _ in first]


def as_dict(scenario, per_config):
    """The JSON document: configs, counters, per step per config counts
    (zeros left out) and the totals."""
    names = list(per_config)
    keys = _used_counters(per_config)
    steps = []
    for i, step in enumerate(_steps(per_config)):
        steps.append({'index': step.index, 'op': step.op, 'line': step.line,
                      'cost': {n: {k: int(per_config[n][i][1][k]) for k in keys
                                   if per_config[n][i][1][k]} for n in names}})
    total = {n: {k: int(sum(c[k] for _, c in per_config[n])) for k in keys} for n in names}
    return {'scenario': scenario.name, 'configs': names,
            'counters': {k: LABELS[k] for k in keys}, 'steps': steps, 'total': total}


def render_json(scenario, per_config):
    return json.dumps(as_dict(scenario, per_config), indent=1, sort_keys=False) + '\n'


def render_text(scenario, per_config):
    """Per step with any cost, one row per counter, one column per config."""
    d = as_dict(scenario, per_config)
    names = d['configs']
    keys = list(d['counters'])
    width = max([len(LABELS[k]) for k in keys] + [5])
    cols = [max(len(n), 9) for n in names]
    fmt = '  %-' + str(width) + 's' + ''.join('  %' + str(w) + 's' for w in cols)
    out = ['scenario %s: cost per step (counts of what the kernel code writes)' % d['scenario'],
           'configs: %s' % ', '.join(names), '']

    def block(title, per_name):
        rows = [k for k in keys if any(per_name[n].get(k, 0) for n in names)]
        if not rows:
            return
        out.append(title)
        out.append(fmt % (('',) + tuple(names)))
        for k in rows:
            vals = [per_name[n].get(k, 0) for n in names]
            out.append(fmt % ((LABELS[k],) + tuple(str(v) for v in vals)) +
                       ('   <-' if len(set(vals)) > 1 else ''))
        out.append('')
    for s in d['steps']:
        block('step %d %s (line %d)' % (s['index'], s['op'], s['line']), s['cost'])
    block('total', d['total'])
    if not keys:
        out.append('(no step wrote anything)')
    return '\n'.join(out).rstrip('\n') + '\n'


def render_svg(scenario, per_config):
    """One panel per used counter; in it a group of bars per step (one bar
    per config, each panel scaled to its own largest value) and the value
    above each bar."""
    d = as_dict(scenario, per_config)
    names, keys, steps = d['configs'], list(d['counters']), d['steps']
    steps = [s for s in steps if any(s['cost'][n] for n in names)]
    bar, gap, left, panel_h, top = 22, 18, 60, 150, 70
    step_h = panel_h + 92
    group = bar * len(names) + gap
    width = max(left + group * max(len(steps), 1) + 40, 560)
    height = top + step_h * max(len(keys), 1) + 20
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif" font-size="11">' % (width, height),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="10" y="20" font-size="15">%s</text>'
             % escape('mmemu cost: %s' % d['scenario'])]
    for i, n in enumerate(names):
        x = 10 + i * 190
        parts.append('<rect x="%d" y="34" width="12" height="12" fill="%s"/>'
                     % (x, COLOURS[i % len(COLOURS)]))
        parts.append('<text x="%d" y="45">%s</text>' % (x + 16, escape(n)))
    for p, key in enumerate(keys):
        y0 = top + p * step_h
        base = y0 + 32 + panel_h
        peak = max([s['cost'][n].get(key, 0) for s in steps for n in names] + [1])
        parts.append('<text x="10" y="%d" font-size="13">%s (max %d)</text>'
                     % (y0 + 12, escape(LABELS[key]), peak))
        parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'
                     % (left - 4, base, width - 20, base))
        for j, s in enumerate(steps):
            gx = left + j * group
            for i, n in enumerate(names):
                v = s['cost'][n].get(key, 0)
                h = round(panel_h * v / peak)
                x = gx + i * bar
                parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s">'
                             '<title>%s</title></rect>'
                             % (x, base - h, bar - 2, h, COLOURS[i % len(COLOURS)],
                                escape('step %d %s, %s: %d' % (s['index'], s['op'], n, v))))
                if v:
                    parts.append('<text x="%d" y="%d" font-size="8" text-anchor="middle">%s</text>'
                                 % (x + bar // 2 - 1, base - h - 2, _short(v)))
            parts.append('<text x="%d" y="%d" font-size="9" transform="rotate(35 %d %d)">%s</text>'
                         % (gx, base + 12, gx, base + 12, escape('%d %s' % (s['index'], s['op']))))
    parts.append('</svg>')
    return '\n'.join(parts) + '\n'


def _short(v):
    for div, suffix in ((1 << 20, 'M'), (1 << 10, 'K')):
        if v >= 10 * div:
            return '%d%s' % (v // div, suffix)
    return str(v)
