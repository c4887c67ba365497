"""``file``: write or append to a file below ``MINOOTS_FILE_ROOT/<tenant>/``.

Off when ``MINOOTS_FILE_ROOT`` is unset. ``path`` is relative, without ``..``; at run time
the real path (symlinks resolved) must still lie inside the tenant's directory, so a link
placed there cannot lead a write elsewhere. A file with more than one hard link is refused in
both modes: a hard link placed in the tenant's directory may name a file outside it (``append``
would write into it; ``write`` would only replace the link, but is refused all the same).
``write`` is atomic: a temporary file in the same directory, fsync, then ``os.replace``.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Any, Literal

from django.conf import settings

from actions.errors import ActionError, ParameterError
from actions.runners.base import ActionContext, ActionResult, Runner, is_utf8

MAX_BYTES = 1024 * 1024
MAX_PATH = 1024
MODES = ("write", "append")
Mode = Literal["write", "append"]


def _content_bytes(content: Any) -> bytes:
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=2)
    return text.encode()


def tenant_root(tenant_id: str) -> Path:
    """The real path of the tenant's directory (not created here)."""
    root = Path(settings.MINOOTS_FILE_ROOT).resolve()
    return (root / tenant_id).resolve()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_hard_links(links: int, relative: str) -> None:
    if links > 1:
        raise ActionError(
            f"path '{relative}' has {links} hard links; a file with more than one link may lie "
            "outside the tenant's directory and is not written",
            permanent=True,
        )


@dataclass(frozen=True)
class FileParams:
    path: str  # normalised, relative to the tenant's directory
    content: Any  # as given: a string, or a JSON value written serialised
    mode: Mode
    data: bytes = field(repr=False, compare=False)  # what ``content`` writes: derived, not compared

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "content": self.content, "mode": self.mode}


class FileRunner(Runner[FileParams]):
    kind = "file"

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> FileParams:
        unknown = sorted(set(parameters) - {"path", "content", "mode"})
        if unknown:
            raise ParameterError(unknown[0], "unknown parameter; allowed: path, content, mode")
        if not settings.MINOOTS_FILE_ROOT:
            raise ParameterError("path", "file actions are disabled (MINOOTS_FILE_ROOT is unset)")
        path = parameters.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ParameterError("path", "is required (a path relative to the tenant's directory)")
        if len(path) > MAX_PATH or "\x00" in path or not is_utf8(path):
            raise ParameterError("path", f"must be at most {MAX_PATH} characters without NUL bytes")
        pure = PurePosixPath(path)
        if pure.is_absolute() or path.startswith("~"):
            raise ParameterError("path", "must be relative to the tenant's directory, not absolute")
        if ".." in pure.parts:
            raise ParameterError("path", "must not contain '..'")
        if path.endswith("/") or pure.name in ("", "."):
            raise ParameterError("path", "must name a file")
        mode = parameters.get("mode", "write")
        if mode not in MODES:
            raise ParameterError("mode", f"must be one of {', '.join(MODES)}")
        if "content" not in parameters:
            raise ParameterError("content", "is required (a string, or any JSON value to serialise)")
        content = parameters["content"]
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        if not is_utf8(text):
            raise ParameterError("content", "must be valid Unicode text")
        data = _content_bytes(content)
        if len(data) > MAX_BYTES:
            raise ParameterError("content", f"must be at most {MAX_BYTES // 1024} KiB")
        return FileParams(path=str(pure), content=content, mode=mode, data=data)

    def attempt(self, params: FileParams, context: ActionContext) -> ActionResult:
        data = params.data
        try:
            target = self._confined_target(context.tenant_id, params.path)
            if params.mode == "append":
                size = self._append(target, data, params.path)
            else:
                size = self._write(target, data, params.path)
        except ActionError:
            raise
        except OSError as exc:
            # Disk full, permissions, a directory in the way: an operator can fix these.
            raise ActionError(f"{params.mode} {params.path} failed: {exc.strerror or exc}", permanent=False) from exc
        verb = "appended" if params.mode == "append" else "wrote"
        return ActionResult(summary=f"{verb} {len(data)} bytes to {params.path} ({size} bytes now)")

    @staticmethod
    def _confined_target(tenant_id: str, relative: str) -> Path:
        """The real path to write, created parents included, refusing anything outside the root."""
        root = tenant_root(tenant_id)
        if not root.is_relative_to(Path(settings.MINOOTS_FILE_ROOT).resolve()):
            raise ActionError(f"the directory of tenant '{tenant_id}' leads outside MINOOTS_FILE_ROOT", permanent=True)
        root.mkdir(parents=True, exist_ok=True)
        wanted = root / relative
        # Resolve before creating anything: a symlinked directory must not make mkdir create
        # directories outside the root.
        parent = wanted.parent.resolve()
        if not parent.is_relative_to(root):
            raise ActionError(f"path '{relative}' leads outside the tenant's directory (symlink)", permanent=True)
        parent.mkdir(parents=True, exist_ok=True)
        target = parent / wanted.name
        if target.is_symlink():
            resolved = target.resolve()
            if not resolved.is_relative_to(root):
                raise ActionError(
                    f"path '{relative}' is a symlink leading outside the tenant's directory", permanent=True
                )
            target = resolved
        if target.is_dir():
            raise ActionError(f"path '{relative}' is a directory", permanent=True)
        return target

    @staticmethod
    def _write(target: Path, data: bytes, relative: str) -> int:
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            pass
        else:
            if not S_ISREG(existing.st_mode):
                raise ActionError(f"path '{relative}' is not a regular file", permanent=True)
            _refuse_hard_links(existing.st_nlink, relative)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(target.parent)
        return len(data)

    @staticmethod
    def _append(target: Path, data: bytes, relative: str) -> int:
        # O_NOFOLLOW: the target was resolved above; a link swapped in since is refused (ELOOP).
        # O_NONBLOCK: opening a FIFO for writing would wait for a reader forever (it fails with
        # ENXIO instead, or opens and is refused below); it changes nothing for a regular file.
        try:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise ActionError(f"path '{relative}' is not a regular file", permanent=True) from exc
            raise
        try:
            # The inode actually opened: a FIFO, a device or a hard link to a file outside the
            # root is refused.
            stat = os.fstat(fd)
            if not S_ISREG(stat.st_mode):
                raise ActionError(f"path '{relative}' is not a regular file", permanent=True)
            _refuse_hard_links(stat.st_nlink, relative)
            size = stat.st_size
            if size + len(data) > MAX_BYTES:
                raise ActionError(
                    f"appending {len(data)} bytes would make the file exceed {MAX_BYTES // 1024} KiB", permanent=True
                )
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            return size + len(data)
        finally:
            os.close(fd)
