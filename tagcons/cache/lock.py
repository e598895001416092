"""flock-based writer locks. The kernel drops an flock when its process dies (even on kill -9), so
a crashed writer never leaves a stale lock behind and a rerun can resume at once.

Scheme: `<cache>.lock` is held exclusively by a plain writer and by merge/consolidation, and shared
by shard writers (so several shards run together but never beside a plain writer or a merge);
each shard also holds `<cache>.parts/<tag>.lock` exclusively so one shard cannot run twice.

A forked child (a DataLoader worker) shares its parent's open file descriptions, and with them every
flock the parent holds: after a kill -9 of the parent the lock would live on in the workers until
they notice. So a forked child closes its copies of the held lock descriptors at once (closing a
copy never releases the parent's lock; only the last descriptor or an explicit unlock does).
"""

from __future__ import annotations

import errno
import fcntl
import os
import weakref
from pathlib import Path

from tagcons.errors import BadInputError, CacheBusyError

UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_HELD: weakref.WeakSet[FileLock] = weakref.WeakSet()  # locks with an open descriptor, in this process
OUT_FIX = "make it writable or pass another --out (a rerun with everything cached needs no write access)"


class FileLock:
    """A non-blocking flock on `lock_path`; `target` is the cache named in messages."""

    def __init__(self, lock_path: Path, target: Path, shared: bool = False, fix: str = OUT_FIX):
        self.lock_path = Path(lock_path)
        self.target = Path(target)
        self.shared = shared
        self.fix = fix  # what the user can do when the folder cannot be written
        self._fd: int | None = None
        self.writable = True

    def acquire(self, read_only_ok: bool = False) -> FileLock:
        """Take the lock. In a read-only folder: with `read_only_ok`, hold it on a read-only handle (or,
        when no lock file exists, not at all: nobody can write there) and set `writable` False."""
        try:
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno not in READ_ONLY:
                raise BadInputError(f"cannot create the lock file {self.lock_path}: {e.strerror}; {self.fix}") from e
            if not read_only_ok:
                raise BadInputError(read_only_message(self.target, e, self.fix)) from e
            return self._acquire_read_only()
        return self._take()

    def _acquire_read_only(self) -> FileLock:
        self.writable = False
        try:
            self._fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return self
        return self._take()

    def _take(self) -> FileLock:
        _HELD.add(self)
        try:
            self._flock(fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BlockingIOError as e:
            self.release()
            raise CacheBusyError(
                f"another tagcons embed or cache merge is writing {self.target} (lock {self.lock_path} is held); "
                "wait for it to finish, or write to another --out"
            ) from e
        except OSError as e:
            self.release()
            if e.errno in UNSUPPORTED:
                raise BadInputError(_unsupported_message(self.lock_path, e)) from e
            raise
        return self

    def try_exclusive(self) -> bool:
        """Trade a shared lock for an exclusive one if nobody else holds it. Linux drops the old lock
        before taking the new one, so on failure this lock is simply no longer held."""
        try:
            self._flock(fcntl.LOCK_UN)
            self._flock(fcntl.LOCK_EX)
        except BlockingIOError:
            self.release()
            return False
        self.shared = False
        return True

    def _flock(self, operation: int) -> None:
        fcntl.flock(self._fd, operation | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        _HELD.discard(self)

    def _forget_in_child(self) -> None:
        """In a forked child: close the inherited copy without unlocking (the parent keeps the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def still_at_path(self) -> bool:
        """Whether the locked file is still the one at `lock_path`: a holder that deletes its lock file on
        release (while still holding it) may have unlinked the file this lock was taken on."""
        if self._fd is None:
            return True
        try:
            return os.stat(self.lock_path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False


def _close_inherited_locks() -> None:
    for lock in list(_HELD):
        lock._forget_in_child()
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _unsupported_message(lock_path: Path, error: OSError) -> str:
    return (
        f"cannot lock {lock_path}: {os.strerror(error.errno)}. This file system does not support file "
        "locks (common on network file systems such as NFS or SMB); write the cache to a local disk. "
        "(HDF5_USE_FILE_LOCKING=FALSE only silences HDF5's own locking; tagcons still needs flock.)"
    )


def read_only_message(target: Path, error: OSError | None = None, fix: str = OUT_FIX) -> str:
    reason = f" ({error.strerror})" if error is not None else ""
    return f"cannot write {target}: its folder {Path(target).parent} is read-only{reason}; {fix}"
