"""A read-only FUSE filesystem over a ``procfs.tree`` tree (mfusepy).

Behaviour follows fs/proc as seen by userspace:

- Every regular file has st_size 0 and is opened with direct_io and without
  keep_cache, so reads go to the daemon and are not cut at st_size by the
  page cache (procfs files report size 0 too).
- A TextFile is rendered once at open; every read of that handle is served
  from that snapshot at any offset and size (seq_read() of a single_open()
  file); past the end reads return EOF.
- A BinaryFile is served range by range (pagemap_read(), kpagecount_read()).
- Permission checks are the kernel's: the mount uses ``default_permissions``
  so the VFS applies mode/uid/gid (generic_permission()) before a request
  reaches the daemon; mounts made by root add ``allow_other``.
- Operations that would change the tree fail with the errno the real
  /proc gives (captured on Linux 6.18, see tests/test_fuse.py):
  unlink/rmdir EPERM (no ->unlink/->rmdir in procfs), a new name
  (create/mkdir/mknod/symlink/link/rename to it) ENOENT (proc_lookup()
  fails instead of leaving a negative dentry), rename onto an existing
  name EPERM, chmod EPERM (proc_setattr()), xattrs EOPNOTSUPP, write(2)
  the node's write_errno. chown is refused with EPERM although root may
  chown a proc_create() entry on a real kernel: the emulated tree is
  immutable. truncate and utimens are accepted and change nothing, as for
  /proc/PID/* (proc_setattr() keeps size 0 and content).
"""
import errno
import itertools
import logging
import os
import select
import shutil
import signal
import stat
import sys
import threading
import time

from procfs.tree import BinaryFile, Dir, ReadContext, Symlink, TextFile, resolve

log = logging.getLogger('procfs.fuse')

READY_TIMEOUT = 30.0
DEV_FUSE = '/dev/fuse'
_READY_MARK = b'\0mmemu-ready\n'


class MountError(Exception):
    """A mount or unmount that cannot be done; the message is one line."""


def _load_mfusepy():
    """Imports mfusepy bound to libfuse3 when it is installed (mfusepy
    prefers libfuse2 otherwise)."""
    from ctypes.util import find_library
    if 'FUSE_LIBRARY_PATH' not in os.environ and find_library('fuse3'):
        os.environ.setdefault('FUSE_LIBRARY_NAME', 'fuse3')
    try:
        import mfusepy
    except ImportError:
        raise MountError('the Python package mfusepy is not installed (run scripts/setup.sh)') from None
    except (OSError, AttributeError) as e:
        raise MountError('libfuse is not usable (%s): install fuse3 and libfuse3-3 '
                         '(scripts/setup.sh does)' % e) from None
    return mfusepy


class _Handle:
    __slots__ = ('node', 'data', 'ctx')

    def __init__(self, node, data, ctx):
        self.node = node
        self.data = data
        self.ctx = ctx


def _fail(err):
    raise OSError(err, os.strerror(err))


def make_operations(root):
    """The mfusepy ``Operations`` object serving ``root`` (a Dir)."""
    mfusepy = _load_mfusepy()

    class ProcOperations(mfusepy.Operations):
        use_ns = True

        def __init__(self):
            self.root = root
            self.mount_time_ns = time.time_ns()
            self._handles = {}
            self._next_fh = itertools.count(1)
            self._lock = threading.Lock()
            self.on_init = None
            self.initialised = False

        def init(self, path):
            self.initialised = True
            if self.on_init is not None:
                threading.Thread(target=self.on_init, daemon=True).start()

        def _node(self, path):
            return resolve(self.root, path)

        def getattr(self, path, fh=None):
            node = self._node(path)
            if fh is not None and node.seq_lseek and not isinstance(node, Dir):
                # FUSE_GETATTR_FH reaches the daemon from lseek(SEEK_END)
                # (fuse_file_llseek -> fuse_update_attributes); procfs'
                # seq_lseek() / mem_lseek() refuse SEEK_END
                _fail(errno.EINVAL)
            t = self.mount_time_ns
            st = {
                'st_mode': node.st_mode,
                'st_uid': node.uid,
                'st_gid': node.gid,
                'st_nlink': node.nlink() if isinstance(node, Dir) else 1,
                'st_size': 0,
                'st_blksize': 1024,
                'st_atime': t, 'st_mtime': t, 'st_ctime': t,
            }
            return st

        def readdir(self, path, fh):
            node = self._node(path)
            if not isinstance(node, Dir):
                _fail(errno.ENOTDIR)
            out = ['.', '..']
            for name, child in node.children().items():
                out.append((name, {'st_mode': child.st_mode}, 0))
            return out

        def readlink(self, path):
            node = self._node(path)
            if not isinstance(node, Symlink):
                _fail(errno.EINVAL)
            self._check_ptrace(node)
            return node.target

        @staticmethod
        def _context():
            uid, gid, pid = mfusepy.fuse_get_context()
            return ReadContext(uid=uid, gid=gid, pid=pid)

        def _check_ptrace(self, node, ctx=None):
            """proc_mem_open() / mm_access(): EACCES unless the reader may
            ptrace-read the process."""
            if node.ptrace_owner is not None and \
                    not (ctx or self._context()).may_ptrace(node.ptrace_owner):
                _fail(errno.EACCES)

        def lseek(self, path, offset, whence, fi):
            """FUSE_LSEEK (SEEK_DATA, SEEK_HOLE): EINVAL from procfs files
            (seq_lseek(), mem_lseek()); sysfs files have no data past
            their size 0."""
            node = self._node(path)
            if node.seq_lseek:
                _fail(errno.EINVAL)
            _fail(errno.ENXIO)

        def open(self, path, fi):
            node = self._node(path)
            if isinstance(node, Dir):
                _fail(errno.EISDIR)
            ctx = self._context()
            self._check_ptrace(node, ctx)
            data = None
            if isinstance(node, TextFile):
                try:
                    data = node.render()
                except Exception:
                    log.exception('rendering %s failed', path)
                    _fail(errno.EIO)
            with self._lock:
                fh = next(self._next_fh)
                self._handles[fh] = _Handle(node, data, ctx)
            fi.fh = fh
            fi.direct_io = 1
            fi.keep_cache = 0
            return 0

        def _handle(self, fi):
            h = self._handles.get(fi.fh)
            if h is None:
                _fail(errno.EBADF)
            return h

        def read(self, path, size, offset, fi):
            h = self._handle(fi)
            if h.data is not None:
                return h.data[offset:offset + size]
            if isinstance(h.node, BinaryFile):
                try:
                    return h.node.pread(offset, size, h.ctx)
                except OSError:
                    raise
                except Exception:
                    log.exception('reading %s at %d+%d failed', path, offset, size)
                    _fail(errno.EIO)
            _fail(errno.EINVAL)

        def release(self, path, fi):
            with self._lock:
                self._handles.pop(fi.fh, None)
            return 0

        def write(self, path, data, offset, fi):
            _fail(getattr(self._handle(fi).node, 'write_errno', errno.EINVAL))

        def truncate(self, path, length, fh=None):
            self._node(path)
            return 0

        def utimens(self, path, times=None):
            self._node(path)
            return 0

        def chmod(self, path, mode):
            _fail(errno.EPERM)

        def chown(self, path, uid, gid):
            _fail(errno.EPERM)

        def unlink(self, path):
            _fail(errno.EPERM)

        def rmdir(self, path):
            _fail(errno.EPERM)

        def create(self, path, mode, fi=None):
            _fail(errno.ENOENT)

        def mkdir(self, path, mode):
            _fail(errno.ENOENT)

        def mknod(self, path, mode, dev):
            _fail(errno.ENOENT)

        def symlink(self, target, source):
            _fail(errno.ENOENT)

        def link(self, target, source):
            _fail(errno.ENOENT)

        def rename(self, old, new):
            try:
                self._node(new)
            except OSError:
                _fail(errno.ENOENT)
            _fail(errno.EPERM)

        def setxattr(self, path, name, value, options, position=0):
            _fail(errno.EOPNOTSUPP)

        def getxattr(self, path, name, position=0):
            _fail(errno.EOPNOTSUPP)

        def removexattr(self, path, name):
            _fail(errno.EOPNOTSUPP)

        def listxattr(self, path):
            self._node(path)
            return []

        def statfs(self, path):
            return {'f_bsize': 4096, 'f_frsize': 4096, 'f_namemax': 255}

    return ProcOperations()


def fusermount():
    """Path of fusermount3 (or fusermount), or None."""
    return shutil.which('fusermount3') or shutil.which('fusermount')


def check_mountpoint(mountpoint):
    """Raises MountError unless ``mountpoint`` is an empty directory that is
    not already a mount point and FUSE is available."""
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError('mount point %s does not exist' % mountpoint) from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise MountError('mount point %s is a stale FUSE mount (its daemon is gone): '
                             'run mmemu umount %s' % (mountpoint, mountpoint)) from None
        raise MountError('mount point %s: %s' % (mountpoint, e.strerror)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError('mount point %s is not a directory' % mountpoint)
    if os.path.ismount(mountpoint):
        raise MountError('%s is already a mount point (mmemu umount %s)' % (mountpoint, mountpoint))
    leftover = [n for n in os.listdir(mountpoint) if n != '.gitkeep']
    if leftover:
        raise MountError('mount point %s is not empty (%s%s)'
                         % (mountpoint, ', '.join(sorted(leftover)[:3]), ', ...' if len(leftover) > 3 else ''))
    if not os.path.exists(DEV_FUSE):
        raise MountError('%s is missing: FUSE is not available on this machine '
                         '(modprobe fuse, or run the container with --device /dev/fuse)' % DEV_FUSE)
    if fusermount() is None:
        raise MountError('fusermount3 is missing: install the fuse3 package (scripts/setup.sh does)')


def _wait_listable(mountpoint, deadline):
    while True:
        if os.path.ismount(mountpoint):
            try:
                os.listdir(mountpoint)
                return True
            except OSError:
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _run(root, mountpoint, on_ready, debug, attach=None):
    """Mounts and serves until unmounted (fusermount -u) or SIGINT/SIGTERM/
    SIGHUP, which libfuse's fuse_set_signal_handlers() turn into a clean
    exit and unmount.  ``attach(ops)``, for a live mount, runs in the
    serving process before the loop and returns what to call after it; the
    kernel then caches no entry or attribute (the tree changes)."""
    mfusepy = _load_mfusepy()
    ops = make_operations(root)

    class FUSE(mfusepy.FUSE):
        """mfusepy without an lseek wrapper: FUSE_LSEEK goes to ops.lseek."""

        def lseek(self, path, offset, whence, fip):
            return self.operations.lseek(path.decode(self.encoding, self.errors) if path else None,
                                         offset, whence, fip.contents if fip else None)

    def ready():
        if _wait_listable(mountpoint, time.monotonic() + READY_TIMEOUT):
            on_ready()
    ops.on_init = ready
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    # attr_timeout=0: lseek(SEEK_END) asks the daemon (see getattr).
    # nothreads: one thread serves every request (fuse_loop(), -s).  The
    # handlers only compute, under the GIL, so libfuse's worker threads
    # gave no concurrency, but each request then ran on whichever thread
    # woke (a fresh Python thread state per ctypes callback, its own
    # malloc arena): reads of pagemap ran at half the speed.
    options = dict(foreground=True, fsname='mmemu', subtype='mmemu',
                   default_permissions=True, direct_io=True, debug=debug, attr_timeout=0,
                   nothreads=True)
    if os.geteuid() == 0:
        options['allow_other'] = True
    detach = None
    if attach is not None:
        options.update(entry_timeout=0, attr_timeout=0, negative_timeout=0)
        detach = attach(ops)
    try:
        FUSE(ops, mountpoint, raw_fi=True, **options)
    except RuntimeError as e:
        # fuse_main_real() also returns non-zero when a signal ended the
        # loop (libfuse 3.14: 8); only a failure before FUSE_INIT is an error.
        if not ops.initialised:
            raise MountError('mounting %s failed (libfuse status %s)' % (mountpoint, e)) from None
    finally:
        if detach is not None:
            detach()


def mount(root, mountpoint, foreground=True, ready_callback=None, debug=False, log_path=None,
          attach=None):
    """Serves ``root`` at ``mountpoint``.

    foreground: blocks until the filesystem is unmounted; ``ready_callback()``
    runs in a helper thread once the root directory can be listed.

    Otherwise: forks a daemon (own session, cwd /, stdio to /dev/null or
    ``log_path``) and returns its pid once the root directory can be listed,
    after calling ``ready_callback()`` in this process. A failure before that
    raises MountError carrying what libfuse printed.
    """
    mountpoint = os.path.abspath(mountpoint)
    check_mountpoint(mountpoint)
    _load_mfusepy()
    if foreground:
        _run(root, mountpoint, ready_callback or (lambda: None), debug, attach)
        return os.getpid()

    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(r)
            os.setsid()
            os.chdir('/')
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(w, 2)

            def ready():
                os.write(w, _READY_MARK)
                if log_path:
                    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    os.dup2(fd, 2)
                    os.close(fd)
                else:
                    os.dup2(null, 2)
                os.close(w)
            _run(root, mountpoint, ready, debug, attach)
            status = 0
        except MountError as e:
            os.write(2, (str(e) + '\n').encode())
        except BaseException:
            import traceback
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(status)

    os.close(w)
    out = b''
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while _READY_MARK not in out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGTERM)
                raise MountError('the mount of %s did not become ready within %d s'
                                 % (mountpoint, READY_TIMEOUT))
            chunk = os.read(r, 4096)
            if not chunk:
                break
            out += chunk
    finally:
        os.close(r)
    if _READY_MARK not in out:
        _, status = os.waitpid(pid, 0)
        lines = [ln.strip() for ln in out.decode(errors='replace').splitlines() if ln.strip()]
        detail = lines[-1] if lines else 'the mount process exited with status %d' % os.waitstatus_to_exitcode(status)
        raise MountError('mounting %s failed: %s' % (mountpoint, detail))
    if not _wait_listable(mountpoint, time.monotonic() + READY_TIMEOUT):
        raise MountError('%s was mounted but cannot be listed' % mountpoint)
    if ready_callback is not None:
        ready_callback()
    return pid


def unmount(mountpoint):
    """fusermount3 -u MOUNTPOINT (the daemon then exits by itself)."""
    import subprocess
    tool = fusermount()
    if tool is None:
        raise MountError('fusermount3 is missing: install the fuse3 package (scripts/setup.sh does)')
    mountpoint = os.path.abspath(mountpoint)
    res = subprocess.run([tool, '-u', mountpoint], capture_output=True, text=True)
    if res.returncode != 0:
        msg = res.stderr.strip().splitlines()
        raise MountError(msg[-1] if msg else '%s -u %s failed' % (tool, mountpoint))
