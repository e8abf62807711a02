"""The debugfs-like tables of sys/kernel/debug/mmemu (an mmemu extension,
no kernel file): a header line naming the columns, then one line per row,
columns padded to a common width and separated by at least one space, so
`split()` parses every line.  A value that the kernel does not keep for a
row is `-`."""
from ._seq import FormatInputError


def table_text(columns, rows):
    """columns: names; rows: sequences of str, one per column."""
    widths = [len(c) for c in columns]
    for r in rows:
        if len(r) != len(columns):
            raise FormatInputError('debugfs table: a row has %d values for %d columns'
                                   % (len(r), len(columns)))
        for i, v in enumerate(r):
            if not v or any(ch.isspace() for ch in v):
                raise FormatInputError('debugfs table: column %s: %r is empty or has spaces'
                                       % (columns[i], v))
            widths[i] = max(widths[i], len(v))
    last = len(columns) - 1
    out = []
    for r in [columns] + list(rows):
        out.append(' '.join(v if i == last else v.ljust(widths[i]) for i, v in enumerate(r)))
    return '\n'.join(out) + '\n'
