"""Builders of scenario steps (as YAML-ready dicts) for the tests."""


def mmap(pid, name, size, **kw):
    return {'mmap': dict(pid=pid, name=name, size=size, **kw)}


def range_op(op, pid, vma, offset=None, length=None, **kw):
    a = {'pid': pid, 'vma': vma}
    if offset is not None:
        a['offset'] = offset
    if length is not None:
        a['length'] = length
    a.update(kw)
    return {op: a}


def write(pid, vma, offset=None, length=None):
    return range_op('write', pid, vma, offset, length)


def read(pid, vma, offset=None, length=None):
    return range_op('read', pid, vma, offset, length)


def munmap(pid, vma, offset=None, length=None):
    return range_op('munmap', pid, vma, offset, length)


def pin(pid, vma, offset=None, length=None):
    return range_op('pin', pid, vma, offset, length)


def fork(pid, child):
    return {'fork': {'pid': pid, 'child': child}}


def exit_(pid):
    return {'exit': {'pid': pid}}


def snap(label):
    return {'snapshot': label}
