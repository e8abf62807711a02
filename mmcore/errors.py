"""Errors raised while a scenario is replayed."""


class Fault(Exception):
    """What would kill the process (SIGSEGV, SIGBUS) or fail the system
    call (EINVAL, EFAULT, ENOMEM...).  The replay turns it into a
    StepError, or goes on when the step says `expect: fault`."""


class StepError(Exception):
    """A step the kernel refused; names the step.  With `path` (the
    scenario file) the message reads "FILE:LINE: step N (op): reason"."""

    def __init__(self, step, message, path=None):
        self.step = step
        self.reason = message
        self.path = path
        if step is None:
            where = '%s: ' % path if path else ''
        elif path:
            where = '%s:%d: step %d (%s): ' % (path, step.line, step.index, step.op)
        else:
            where = 'step %d (%s, line %d): ' % (step.index, step.op, step.line)
        super().__init__(where + message)
