"""The control channel of a live mount: a Unix socket in a runtime
directory named after the mount point (not a file in the served tree,
which stays read-only).

One request per connection: a JSON object on one line, answered by one
JSON object {"ok": bool, "lines": [...], "error": "..."}.  The directory
is mode 0700, so only the user who mounted (and root) can drive the
machine.
"""
import errno
import json
import os
import socket
import threading
from urllib.parse import quote

SOCKET_NAME = 'control.sock'
MAX_REQUEST = 1 << 20


class ControlError(Exception):
    """The control socket cannot be reached or answered badly; one line."""


def runtime_base():
    """$XDG_RUNTIME_DIR/mmemu, /run/mmemu for root, else /tmp/mmemu-UID."""
    xdg = os.environ.get('XDG_RUNTIME_DIR')
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return os.path.join(xdg, 'mmemu')
    if os.geteuid() == 0 and os.path.isdir('/run'):
        return '/run/mmemu'
    return '/tmp/mmemu-%d' % os.geteuid()


def runtime_dir(mountpoint):
    """The directory of a mount point's control socket: its absolute path,
    %-escaped into one name (/work/mnt -> %2Fwork%2Fmnt)."""
    return os.path.join(runtime_base(), quote(os.path.abspath(mountpoint), safe=''))


def socket_path(mountpoint):
    return os.path.join(runtime_dir(mountpoint), SOCKET_NAME)


def _mkdir_private(path):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        os.chmod(path, 0o700)


class Server:
    """Serves `handle(request dict) -> (lines, error message or None)` on
    the control socket of `mountpoint`, in a daemon thread."""

    def __init__(self, mountpoint, handle):
        self.path = socket_path(mountpoint)
        self.handle = handle
        self.sock = None

    def start(self):
        d = os.path.dirname(self.path)
        _mkdir_private(d)
        try:
            os.unlink(self.path)        # left by a daemon that was killed
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(8)
        self.sock = s
        threading.Thread(target=self._loop, daemon=True, name='mmemu-control').start()
        return self

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                req = json.loads(_read_line(conn))
                if not isinstance(req, dict):
                    raise ValueError('a request is a JSON object')
                lines, error = self.handle(req)
                reply = {'ok': error is None, 'lines': lines, 'error': error}
            except Exception as e:          # a bad request must not stop the daemon
                reply = {'ok': False, 'lines': [], 'error': '%s' % (str(e).splitlines() or
                                                                    [type(e).__name__])[0]}
            try:
                conn.sendall(json.dumps(reply).encode() + b'\n')
            except OSError:
                pass

    def stop(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for p in (self.path, os.path.dirname(self.path)):
            try:
                (os.unlink if p == self.path else os.rmdir)(p)
            except OSError:
                pass


def _read_line(conn):
    buf = b''
    while not buf.endswith(b'\n'):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError('request too long')
    return buf.decode()


def request(mountpoint, req, timeout=600):
    """Sends one request to the live mount at `mountpoint`; returns the
    reply dict.  Raises ControlError when there is no live mount."""
    path = socket_path(mountpoint)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise ControlError('%s is not a live mount (no daemon listens on %s; '
                                   'mount it with mmemu mount --live)'
                                   % (os.path.abspath(mountpoint), path)) from None
            raise ControlError('%s: %s' % (path, e.strerror)) from None
        s.sendall(json.dumps(req).encode() + b'\n')
        data = _read_line(s)
    except socket.timeout:
        raise ControlError('the live mount at %s did not answer within %d s'
                           % (mountpoint, timeout)) from None
    finally:
        s.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError('the live mount at %s gave no valid answer' % mountpoint) from None
    return reply
