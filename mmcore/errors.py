"""Errors raised while a scenario is replayed."""


class Fault(Exception):
    """What would kill the process (SIGSEGV, SIGBUS) or fail the system
    call (EINVAL, EFAULT, ENOMEM...).  The replay turns it into a
    StepError, or goes on when the step says `expect: fault`."""


class StepError(Exception):
    """A step the kernel refused; names the step."""

    def __init__(self, step, message):
        self.step = step
        self.reason = message
        where = ''
        if step is not None:
            where = 'step %d (%s, line %d): ' % (step.index, step.op, step.line)
        super().__init__(where + message)
