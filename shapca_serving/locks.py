"""Writing files safely: one writer at a time (`WriterLock`, an exclusive `flock` on a lock file
beside or inside what is written). Files written whole or not at all: `modeling_shapca.files.write_atomic`.

The lock belongs to the open file, so the kernel releases it when the process ends, however it
ends: a lock file left by a killed run is simply taken by the next one (no stale-lock
heuristics, no PID files). A second writer is refused at once with a message naming what is
locked. Used by the prediction CLI (`.<output>.lock` beside `--output`), training
(`<output_dir>/.shapca-train.lock`) and the ONNX export (`<folder>/.shapca-export.lock`).
POSIX only (fcntl), as the rest of the file handling.
"""

from __future__ import annotations

import os
from pathlib import Path


class WriterLock:
    """`with WriterLock(path, busy="message"):` holds an exclusive lock on `path` (created if
    needed, removed on release); `busy` is the `ValueError` raised while another process holds
    it."""

    def __init__(self, path: str | Path, busy: str):
        self.path, self.busy = Path(path), busy
        self._handle = None

    def acquire(self) -> "WriterLock":
        """The lock, or a `ValueError` in one line: `busy` while another process holds it; a lock
        path that is a folder, a link (never followed: O_NOFOLLOW) or inside a file."""
        import errno
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ValueError(f"{self.path.parent} is not a folder (the lock {self.path.name} goes inside it)") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        except IsADirectoryError:
            raise ValueError(f"the lock file {self.path} is a folder: move it away") from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ValueError(f"the lock file {self.path} is a symbolic link, which is never followed: remove "
                                 "it") from None
            raise ValueError(f"the lock file {self.path} cannot be opened ({error.strerror})") from None
        handle = os.fdopen(fd, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(handle.fileno()).st_ino != os.stat(self.path).st_ino:
                raise BlockingIOError  # the lock file was replaced meanwhile: another run holds the new one
        except (BlockingIOError, FileNotFoundError):
            handle.close()
            raise ValueError(self.busy) from None
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self.path.unlink(missing_ok=True)  # while still held: the next writer opens a new file
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


__all__ = ["WriterLock"]
