"""Building scenarios in Python: the same steps, defaults and checks as a
scenario file (scenario-format.md, format 1, plus `expect`).

Every change is checked at once by the scenario loader itself
(mmcore.scenario) on the YAML text the builder writes, so a builder
accepts exactly what a file may say and fails with the loader's message.
"""
import copy
import math
import os
import re

import yaml

from mmcore import scenario as _loader
from mmcore.scenario import ScenarioError

_LOCATION = re.compile(r'^[^\n]*?:\d+: ')


def _flow(value):
    """One-line YAML for a step's arguments."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False,
                          width=math.inf).strip().removesuffix('...').strip()


def _clean(args):
    return {k: v for k, v in args.items() if v is not None}


class Scenario:
    """A scenario under construction.

        s = Scenario('fork-then-cow', thp={'enabled': 'never', 'sizes': {'64K': 'always'}})
        s.process(100).mmap(100, 'buf', '64K', align='64K').write(100, 'buf')
        s.fork(100, 101).snapshot('forked')
        s.expect('smaps', {'pid': 100, 'vma': 'buf'}, Pss=32)

    Step methods take the step's arguments by their format names and
    return the scenario, so calls chain.  A bad argument raises
    ScenarioError("step N (op): what is wrong") right away.  `to_yaml()`
    writes the file; `Scenario.from_yaml()` reads one back.
    """

    def __init__(self, name, description=None, memory=None, thp=None, files=(), cgroups=(),
                 processes=(), mapcount=None, bits=None, _doc=None):
        if _doc is not None:
            self._doc = _doc
        else:
            self._doc = {'format': _loader.FORMAT_VERSION, 'name': name}
            if description is not None:
                self._doc['description'] = description
            kernel = _clean({'memory': memory, 'thp': thp, 'mapcount': mapcount, 'bits': bits})
            if kernel:
                self._doc['kernel'] = kernel
            self._doc['files'] = [dict(f) for f in files]
            self._doc['cgroups'] = list(cgroups)
            self._doc['processes'] = []
            self._doc['steps'] = []
            for p in processes:
                self.process(**p) if isinstance(p, dict) else self.process(p)
        self._parsed = None

    # --- header ---------------------------------------------------------------------
    @property
    def name(self):
        return self._doc['name']

    def process(self, pid, comm=None, cgroup=None):
        """A process alive at the start (`processes` entry)."""
        return self._change(lambda d: d.setdefault('processes', []).append(
            _clean({'pid': pid, 'comm': comm, 'cgroup': cgroup})))

    def file(self, name, size, folio_size=None, path=None):
        """A file that file mappings can refer to (`files` entry)."""
        return self._change(lambda d: d.setdefault('files', []).append(
            _clean({'name': name, 'size': size, 'folio_size': folio_size, 'path': path})))

    def cgroup(self, path):
        """A cgroup v2 path (`cgroups` entry)."""
        return self._change(lambda d: d.setdefault('cgroups', []).append(path))

    # --- steps ------------------------------------------------------------------------
    def step(self, op, args=None):
        """Appends the step `op` with its argument mapping (or the label of
        a snapshot) as a scenario file would write it."""
        return self._change(lambda d: d.setdefault('steps', []).append(
            {op: _clean(args) if isinstance(args, dict) else args}))

    def mmap(self, pid, name, size, kind=None, file=None, file_offset=None, prot=None,
             align=None, addr=None, expect=None):
        return self.step('mmap', locals_args(locals()))

    def read(self, pid, vma, offset=None, length=None, expect=None):
        return self.step('read', locals_args(locals()))

    def write(self, pid, vma, offset=None, length=None, expect=None):
        return self.step('write', locals_args(locals()))

    def fork(self, pid, child, comm=None, expect=None):
        return self.step('fork', locals_args(locals()))

    def exit(self, pid, expect=None):
        return self.step('exit', locals_args(locals()))

    def munmap(self, pid, vma, offset=None, length=None, expect=None):
        return self.step('munmap', locals_args(locals()))

    def mprotect(self, pid, vma, prot, offset=None, length=None, expect=None):
        return self.step('mprotect', locals_args(locals()))

    def mremap(self, pid, vma, new_size=None, move_to=None, expect=None):
        return self.step('mremap', locals_args(locals()))

    def madvise(self, pid, vma, advice, offset=None, length=None, expect=None):
        return self.step('madvise', locals_args(locals()))

    def pin(self, pid, vma, offset=None, length=None, expect=None):
        return self.step('pin', locals_args(locals()))

    def unpin(self, pid, vma, offset=None, length=None, expect=None):
        return self.step('unpin', locals_args(locals()))

    def thp(self, enabled=None, sizes=None, shmem_enabled=None, use_zero_page=None):
        return self.step('thp', locals_args(locals()))

    def snapshot(self, label):
        return self.step('snapshot', label)

    def expect(self, subject, target=None, fields=None, configs=None, note=None, **more):
        """An `expect` step: `subject` (smaps, smaps_rollup, numa_maps,
        meminfo, vmstat, memcg, pages, folio) with its arguments `target`,
        the stated values `fields` (a dict, for names such as
        'Active(anon)') and/or keyword arguments, optionally the configs
        it speaks about and a note."""
        args = {subject: dict(target or {})}
        if configs is not None:
            args['configs'] = list(configs) if not isinstance(configs, str) else configs
        if note is not None:
            args['note'] = note
        args.update(fields or {})
        args.update(more)
        return self.step('expect', args)

    # --- text ---------------------------------------------------------------------------
    def to_yaml(self):
        """The scenario as a format-1 file, one line per step."""
        d = self._doc
        head = {k: v for k, v in d.items() if k != 'steps' and v not in ([], None)}
        text = yaml.safe_dump(head, sort_keys=False, default_flow_style=False)
        lines = ['steps:'] if d.get('steps') else []
        for st in d.get('steps', []):
            (op, args), = st.items()
            lines.append('  - %s: %s' % (op, _flow(args)))
        return text + ''.join(ln + '\n' for ln in lines)

    def save(self, path):
        """Writes to_yaml() to `path`; returns the path."""
        with open(path, 'w') as f:
            f.write(self.to_yaml())
        return path

    @classmethod
    def from_yaml(cls, source):
        """A Scenario from YAML text or from a file path; the file is
        checked by the loader first (errors name FILE:LINE)."""
        if isinstance(source, os.PathLike) or (isinstance(source, str) and '\n' not in source
                                               and os.path.exists(source)):
            path = os.fspath(source)
            parsed = _loader.load_scenario(path)
            with open(path) as f:
                text = f.read()
        else:
            parsed = _loader.parse_scenario_text(source, '<string>')
            text = source
        _validate_expects(parsed)
        doc = yaml.safe_load(text)
        for key in ('files', 'cgroups', 'processes', 'steps'):
            doc[key] = doc.get(key) or []
        s = cls(doc['name'], _doc=doc)
        s._parsed = parsed
        return s

    @property
    def parsed(self):
        """The loader's mmcore.scenario.Scenario for this scenario."""
        if self._parsed is None:
            self._parsed = self._parse(self._doc)
        return self._parsed

    def copy(self):
        return Scenario(self.name, _doc=copy.deepcopy(self._doc))

    def __repr__(self):
        return 'Scenario(%r, %d steps)' % (self.name, len(self._doc.get('steps', [])))

    # --- checking -------------------------------------------------------------------------
    def _parse(self, doc):
        text = Scenario(doc['name'], _doc=doc).to_yaml()
        try:
            parsed = _loader.parse_scenario_text(text, '<scenario %s>' % doc.get('name'))
            _validate_expects(parsed)
        except ScenarioError as e:
            raise ScenarioError(_LOCATION.sub('', str(e), count=1)) from None
        return parsed

    def _change(self, edit):
        doc = copy.deepcopy(self._doc)
        edit(doc)
        if doc.get('processes'):
            self._parsed = self._parse(doc)
        else:
            self._parsed = None
        self._doc = doc
        return self


def locals_args(values):
    return _clean({k: v for k, v in values.items() if k != 'self'})


def _validate_expects(parsed):
    from procfs import expect_check
    from .kernels import config_names
    expect_check.validate(parsed, config_names())
