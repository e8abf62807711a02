"""A progress bar on the terminal for long replays and exports: shown on
stderr once the work has taken more than a second, redrawn at most ten
times a second, erased at the end; nothing at all when stderr is not a
terminal."""
import sys
import time

DELAY = 1.0
INTERVAL = 0.1
WIDTH = 30


class Progress:
    def __init__(self, title, total, stream=None):
        self.title = title
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def update(self, done, what=''):
        """`done` of `total` finished; `what` is being worked on now."""
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.start < DELAY or now - self.last < INTERVAL:
            return
        self.last = now
        filled = WIDTH * min(done, self.total) // self.total
        line = '%s [%s%s] %d/%d %s' % (self.title, '#' * filled, '.' * (WIDTH - filled),
                                       done, self.total, what)
        self.stream.write('\r\x1b[K' + line[:200])
        self.stream.flush()
        self.shown = True

    def close(self):
        if self.shown:
            self.stream.write('\r\x1b[K')
            self.stream.flush()
            self.shown = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
