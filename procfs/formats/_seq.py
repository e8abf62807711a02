"""Small seq_file-like helpers shared by the renderers, and input checks.

The kernel writes most /proc numbers with ``seq_put_decimal_ull_width()``
(right-aligned in a minimum width, never truncated) and hex numbers with
``seq_put_hex_ll()`` (lowercase, zero-padded to a minimum width).
"""
from collections.abc import Mapping

U64_MAX = (1 << 64) - 1


class FormatInputError(ValueError):
    """Raised when a renderer is given a value it cannot print."""


def check_uint(name, value, limit=U64_MAX):
    """Return ``value`` as an int if it is an integer in [0, limit]."""
    if isinstance(value, bool) or not hasattr(value, '__index__'):
        raise FormatInputError(f'{name} must be an integer, got {value!r}')
    value = int(value)
    if value < 0 or value > limit:
        raise FormatInputError(f'{name} must be in 0..{limit}, got {value}')
    return value


def check_int(name, value, bits=64):
    """Return ``value`` as an int if it fits a signed ``bits``-bit integer."""
    if isinstance(value, bool) or not hasattr(value, '__index__'):
        raise FormatInputError(f'{name} must be an integer, got {value!r}')
    value = int(value)
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise FormatInputError(f'{name} does not fit a signed {bits}-bit integer: {value}')
    return value


def check_text(name, value, allow_newline=False):
    """Return ``value`` if it is a str (without newline unless allowed)."""
    if not isinstance(value, str):
        raise FormatInputError(f'{name} must be a str, got {value!r}')
    if not allow_newline and '\n' in value:
        raise FormatInputError(f'{name} must not contain a newline: {value!r}')
    return value


def dec_width(value, width):
    """``seq_put_decimal_ull_width()``: right-aligned, at least ``width`` wide."""
    return f'{value:>{width}d}'


def hex_width(value, width):
    """``seq_put_hex_ll()``: lowercase hex, zero-padded to ``width``."""
    return f'{value:0{width}x}'


def mangle_path(path, esc):
    """``mangle_path()``: every character of ``esc`` in ``path`` becomes a
    backslash and three octal digits (``' '`` -> ``\\040``)."""
    out = []
    for ch in path:
        if ch in esc:
            code = ord(ch)
            out.append('\\%o%o%o' % ((code >> 6) & 3, (code >> 3) & 7, code & 7))
        else:
            out.append(ch)
    return ''.join(out)


def keyed_values(name, keys, values):
    """Validate ``values`` (a mapping) against the known ``keys``; return a
    dict with every key, missing ones 0."""
    if not isinstance(values, Mapping):
        raise FormatInputError(f'{name} values must be a mapping, got {type(values).__name__}')
    known = set(keys)
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise FormatInputError(f'unknown {name} key(s): {", ".join(map(repr, unknown))}')
    return {k: check_uint(f'{name} {k}', values.get(k, 0)) for k in keys}
