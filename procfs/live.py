"""A live machine: the replay of a scenario kept open while it is served.

Every kernel config advances together, step by step, on request
(`mmemu step`, `mmemu do`).  A batch of steps runs on copies of the
kernels and the served tree is swapped for one over the copies when the
batch is done: whatever an open file handle reads (a rendered text, a
pagemap over its kernel) stays the state it was opened in, and the next
open sees the new one.  A step the kernel or the validator refuses changes
nothing: the steps before it in the batch stay applied, it and the rest
are dropped.  The clock runs with the wall-clock time the machine has been
served (uptime, /proc/stat), on top of the time the steps take.
"""
import copy
import dataclasses
import threading
import time

from mmcore.errors import StepError
from mmcore.kernel import HZ
from mmcore.scenario import LiveSteps, ScenarioError, Snapshot
from .build import load_kernels, tree_of


class LiveError(Exception):
    """A request the live machine cannot carry out; one line."""


def explain_lines(kernels, pid, addr, step_names):
    """procfs.explain.explain(), with an unknown pid as a LiveError."""
    from .explain import explain
    try:
        return explain(kernels, pid, addr, step_names)
    except KeyError:
        raise LiveError('no process %d (pids: %s)' % (pid, ', '.join(
            str(p) for p in sorted(kernels[0][1].processes)))) from None


def describe(st):
    """`step 7 (line 30): fork pid=100 child=101 comm=worker`."""
    args = []
    for f in dataclasses.fields(st):
        if f.name in ('index', 'line', 'expect_fault'):
            continue
        v = getattr(st, f.name)
        if v is None or (f.name == 'file_offset' and getattr(st, 'file', None) is None):
            continue
        if f.name in ('offset', 'length', 'size', 'new_size', 'align', 'file_offset', 'addr',
                      'move_to'):
            v = '%#x' % v
        elif f.name == 'settings':
            v = 'enabled=%s' % v.enabled
        args.append('%s=%s' % (f.name, v) if f.name != 'settings' else v)
    if st.expect_fault:
        args.append('expect=fault')
    return '%s %s' % (st.op, ' '.join(args))


class LiveMachine:
    """The kernels of every config, the position in the scenario and the
    tree serving them.  Thread-safe: one request at a time."""

    def __init__(self, scenario_path, config_paths, stop_at=None, with_init=True,
                 time_fn=time.monotonic):
        self.path = str(scenario_path)
        self.with_init = with_init
        self.sc, self.kernels = load_kernels(self.path, config_paths, with_init, stop_at)
        with open(self.path, encoding='utf-8') as f:
            self.steps = LiveSteps(self.sc, f.read())
        t0 = time_fn()

        def served_ticks():
            return int((time_fn() - t0) * HZ)
        for _, k in self.kernels:
            k.clock = served_ticks
        self.next = 0                 # index of the scenario's next step
        self.history = []             # (step, origin path) of every applied step
        self.passed = []              # snapshot labels passed
        self.generation = 0
        self.on_change = None         # callable(root) run after every change
        self._lock = threading.Lock()
        self.root = tree_of(self.kernels, with_init)
        if stop_at is not None:
            done, err = self.step(to=stop_at)
            if err:
                raise err

    # --- requests -------------------------------------------------------------------
    def step(self, n=None, to=None, all=False):
        """Applies the next n scenario steps (default 1), or up to and
        including snapshot `to`, or all.  Returns (steps applied, error or
        None)."""
        with self._lock:
            left = len(self.steps.items) - self.next
            if to is not None:
                ahead = [i for i in range(self.next, len(self.steps.items))
                         if i < len(self.sc.steps) and isinstance(self.sc.steps[i], Snapshot)
                         and self.sc.steps[i].label == to]
                if not ahead:
                    why = ('already passed' if to in self.passed else
                           'labels ahead: %s' % (', '.join(self._labels_ahead()) or 'none'))
                    raise LiveError('no snapshot %r ahead in %s (%s)' % (to, self.path, why))
                count = ahead[0] - self.next + 1
            elif all:
                count = left
            else:
                count = 1 if n is None else n
                if count < 0:
                    raise LiveError('step count must not be negative, got %d' % count)
            if left == 0 and count:
                raise LiveError('the scenario %s has no steps left (%d applied)'
                                % (self.path, len(self.sc.steps)))
            count = min(count, left)
            first = self.next
            return self._batch(lambda v, i: v.file_step(first + i) if i < count else None)

    def do(self, text):
        """One extra step in the scenario format."""
        with self._lock:
            return self._batch(lambda v, i: v.extra_step(text) if i == 0 else None)

    def status(self):
        """Lines for `mmemu status`."""
        k0 = self.kernels[0][1]
        nxt = ('step %d (line %d): %s' % (self.next + 1, self.steps.items.item_lines[self.next],
                                           describe(self._peek()))
               if self.next < len(self.steps.items) else 'none (end of the scenario)')
        pids = sorted(k0.processes)
        return ['scenario: %s (%s), %d steps' % (self.sc.name, self.path, len(self.sc.steps)),
                'configs: %s' % ', '.join(cfg.name for cfg, _ in self.kernels),
                'applied: %d of %d scenario steps, %d extra'
                % (self.next, len(self.sc.steps), self.steps.extra),
                'next: %s' % nxt,
                'labels passed: %s' % (', '.join(self.passed) or 'none'),
                'labels ahead: %s' % (', '.join(self._labels_ahead()) or 'none'),
                'pids: %s' % ', '.join('%d (%s)' % (p, k0.processes[p].comm) for p in pids)]

    def step_names(self):
        return {st.index: describe(st) for st, _ in self.history}

    def explain(self, pid, addr):
        if not isinstance(pid, int) or not isinstance(addr, int):
            raise LiveError('explain needs an integer pid and address')
        with self._lock:
            return explain_lines(self.kernels, pid, addr, self.step_names())

    def map(self, pid, fmt, color=False):
        from .mapview import NoSuchProcess, render
        if pid is not None and not isinstance(pid, int) or fmt not in ('text', 'svg', 'html'):
            raise LiveError('map needs an integer pid or none, and a format text, svg or html')
        with self._lock:
            try:
                return render(self.kernels, pid, fmt, color).splitlines()
            except NoSuchProcess as e:
                raise LiveError(str(e)) from None

    # --- internals ----------------------------------------------------------------------
    def _peek(self):
        try:
            return self.steps.file_step(self.next)
        except ScenarioError:
            return self.sc.steps[self.next]

    def _labels_ahead(self):
        return [st.label for st in self.sc.steps[self.next:] if isinstance(st, Snapshot)]

    def _copies(self):
        memo = {id(self.sc): self.sc}
        for cfg, _ in self.kernels:
            memo[id(cfg)] = cfg
        kernels = [(cfg, copy.deepcopy(k, memo)) for cfg, k in self.kernels]
        return kernels, copy.deepcopy(self.steps, memo)

    def _apply(self, kernels, st, origin):
        for cfg, k in kernels:
            try:
                k.apply(st)
            except StepError as e:
                raise LiveError('%s:%d: step %d (%s): %s (kernel config %s)'
                                % (origin, st.line, st.index, st.op, e.reason, cfg.name)) from None

    def _batch(self, next_step):
        """Runs next_step(validator, i) for i = 0, 1, ... until it returns
        None, on copies of the kernels; installs the copies."""
        kernels, validator = self._copies()
        done, error = [], None
        try:
            i = 0
            while True:
                st = next_step(validator, i)
                if st is None:
                    break
                origin = self.path if st.index <= len(self.sc.steps) else '<do>'
                self._apply(kernels, st, origin)
                validator.commit(st)
                done.append((st, origin))
                i += 1
        except (LiveError, ScenarioError) as e:
            error = e if isinstance(e, LiveError) else LiveError(str(e))
            # the refused step may have changed some kernels: redo the rest
            kernels, validator = self._copies()
            for st, origin in done:
                self._apply(kernels, st, origin)
                validator.commit(st)
        if done:
            self.kernels, self.steps = kernels, validator
            for st, origin in done:
                self.history.append((st, origin))
                if origin == self.path:
                    self.next += 1
                if isinstance(st, Snapshot):
                    self.passed.append(st.label)
            self.generation += 1
            self.root = tree_of(self.kernels, self.with_init)
            if self.on_change is not None:
                self.on_change(self.root)
        return ['%s %s' % ('step %d (line %d):' % (st.index, st.line) if origin == self.path
                           else 'do %d (step %d):' % (st.index - len(self.sc.steps), st.index),
                           describe(st)) for st, origin in done], error

    # --- the control channel -------------------------------------------------------------
    def handle(self, req):
        """One control request (procfs.control): (lines, error or None)."""
        cmd = req.get('cmd')
        try:
            if cmd == 'step':
                n = req.get('n')
                if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
                    raise LiveError('step count must be an integer, got %r' % (n,))
                lines, err = self.step(n=n, to=req.get('to'), all=bool(req.get('all')))
            elif cmd == 'do':
                if not isinstance(req.get('step'), str):
                    raise LiveError('do needs a step in the scenario format')
                lines, err = self.do(req['step'])
            elif cmd == 'status':
                lines, err = self.status(), None
            elif cmd == 'explain':
                lines, err = self.explain(req.get('pid'), req.get('addr')), None
            elif cmd == 'map':
                lines, err = self.map(req.get('pid'), req.get('format', 'text'),
                                      bool(req.get('color'))), None
            else:
                raise LiveError('unknown request %r' % (cmd,))
        except LiveError as e:
            return [], str(e)
        return lines, (str(err) if err is not None else None)


def attach(machine, mountpoint):
    """For fuse.mount(attach=...): the served root follows the machine, and
    the control socket of `mountpoint` takes requests until unmounted."""
    from .control import Server

    def attach_ops(ops):
        def follow(root):
            ops.root = root
        machine.on_change = follow
        ops.root = machine.root
        return Server(mountpoint, machine.handle).start().stop
    return attach_ops
