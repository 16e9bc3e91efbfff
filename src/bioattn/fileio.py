"""Safe output writes: checked targets, atomic replacement, the user's umask.

Every file or directory bioattn writes goes through :func:`atomic_write` or :func:`atomic_dir`.
Both first check the target (:func:`check_output_file`, :func:`check_output_dir`): a symbolic
link, a device file, a FIFO or socket, a directory where a file is expected (or a file where a
directory is expected), a parent path that runs through a file, or a parent that cannot be
written is refused with a one-line :class:`~bioattn.errors.BioattnError`, and nothing is
touched. The content is then written to a temporary name next to the target and renamed over
it, so a failed or interrupted write leaves the previous copy. New files get the permissions an
ordinary ``open()`` would give them (``0o666`` less the umask; directories ``0o777`` less the
umask); a replaced file or directory keeps the permissions it had.

A leaf module (standard library only), shared by checkpoints, the data cache, reports and figures.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import BioattnError


def current_umask() -> int:
    """The process's umask (read without changing it where the system allows)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def kind_of_mode(mode: int) -> str:
    """What a file-system entry is, from its ``st_mode``: 'a file', 'a directory', 'a symbolic
    link', 'a device file', ..."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode):
        return "a file"
    return "not a regular file"


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise BioattnError(f"cannot check {path}: {exc.strerror or exc}") from None


def _writable(folder: Path) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(folder, os.W_OK | os.X_OK, effective_ids=True)
    return os.access(folder, os.W_OK | os.X_OK)


def _check_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    ancestor = path.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BioattnError(f"cannot write {what} {path}: {ancestor} is a file, not a directory")
    if not _writable(ancestor):
        raise BioattnError(f"cannot write {what} {path}: {ancestor} is not writable")


def _existing_not_a_link(path: Path, what: str) -> os.stat_result | None:
    """The ``lstat`` of what is at ``path`` (None if nothing); a symbolic link is refused."""
    st = _lstat(path)
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise BioattnError(f"{what} {path} is a symbolic link: bioattn does not replace links "
                           "(give the path it points to, or another name)")
    return st


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """``path`` as a :class:`~pathlib.Path` if it can be written as a regular file; raises
    :class:`BioattnError` (one line, nothing touched) for a symbolic link, a directory, a device
    file, FIFO or socket, a parent path through a file, or an unwritable parent."""
    path = Path(path)
    st = _existing_not_a_link(path, what)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise BioattnError(f"{what} {path} is a directory: give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise BioattnError(f"{what} {path} is {kind_of_mode(st.st_mode)}, not a regular file: "
                               "bioattn replaces regular files only")
    _check_parent(path, what)
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """``path`` as a :class:`~pathlib.Path` if it can be written (or replaced) as a whole
    directory; raises :class:`BioattnError` for a symbolic link, a file, a device file, FIFO or
    socket, a parent path through a file, or an unwritable parent."""
    path = Path(path)
    st = _existing_not_a_link(path, what)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise BioattnError(f"{what} {path} is {kind_of_mode(st.st_mode)}, not a directory")
    old = _lstat(path.with_name(path.name + ".old"))
    if old is not None and not stat.S_ISDIR(old.st_mode):
        raise BioattnError(f"cannot write {what} {path}: {path.name}.old next to it is "
                           f"{kind_of_mode(old.st_mode)}, not a directory (the previous copy goes there)")
    _check_parent(path, what)
    return path


def output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Create (if needed) and return a folder to write files into. A symbolic link to a
    directory is used as it is; a file or anything else that is not a directory is refused."""
    path = Path(path)
    if path.is_dir():
        if not _writable(path):
            raise BioattnError(f"cannot write {what} {path}: it is not writable")
        return path
    st = _lstat(path)
    if st is not None:
        raise BioattnError(f"{what} {path} is {kind_of_mode(st.st_mode)}, not a directory")
    _check_parent(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BioattnError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    return path


def refuse_input_as_output(out: str | Path, inputs: Iterable[str | Path], what: str = "output") -> None:
    """Raise :class:`BioattnError` if ``out`` is (after resolving links) one of ``inputs``."""
    out = Path(out)
    for source in inputs:
        source = Path(source)
        try:
            same = os.path.samefile(out, source)
        except OSError:
            same = out.resolve() == source.resolve()
        if same:
            raise BioattnError(f"{what} {out} is the input {source}: give another file name "
                               "(bioattn never overwrites its input)")


def refuse_output_inside(out: str | Path, inputs: Iterable[tuple[str, str | Path]], what: str = "output") -> None:
    """Raise :class:`BioattnError` if ``out`` is one of the input folders of ``inputs``
    (``(description, path)`` pairs) or lies inside one (links resolved): a command never writes
    into what it reads, where its files would become part of the input of the next run."""
    target = Path(out).expanduser().resolve()
    for description, source in inputs:
        folder = Path(source).expanduser().resolve()
        if target == folder or folder in target.parents:
            where = "is" if target == folder else "lies inside"
            raise BioattnError(f"{what} {out} {where} {description} {source}: give a place outside it "
                               "(bioattn never writes into its input)")


def _make_parent(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BioattnError(f"cannot write {what} {path}: {exc.strerror or exc}") from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _apply_umask(folder: Path) -> None:
    """Give what ``fill`` wrote under ``folder`` the permissions of ordinary new files and
    folders (some writers create theirs private, 0600)."""
    mask = current_umask()
    for root, dirs, files in os.walk(folder):
        for names, mode in ((dirs, 0o777 & ~mask), (files, 0o666 & ~mask)):
            for name in names:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, mode)


def _write_error(exc: OSError, what: str, path: Path, had_copy: bool) -> BioattnError:
    """A failed write's file-system error as one line, saying whether the previous copy survived."""
    kept = "; the previous copy is intact" if had_copy else ""
    return BioattnError(f"cannot write {what} {path}: {exc.strerror or exc}{kept}")


def atomic_write(path: str | Path, write: Callable[[str], None], what: str = "output") -> Path:
    """Write ``path`` through ``write(tmp_path)`` then rename, so a failed or interrupted write
    leaves the previous file untouched. The target is checked first (:func:`check_output_file`);
    a file-system error becomes a one-line :class:`BioattnError`."""
    path = check_output_file(path, what)
    existing = _lstat(path)
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~current_umask()
    _make_parent(path, what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise BioattnError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(exc, what, path, existing is not None) from exc
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, what: str = "output") -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write, what)


def atomic_dir(final: str | Path, fill: Callable[[Path], None], what: str = "output folder") -> Path:
    """Build a directory with ``fill(tmp_dir)`` and swap it in place of ``final``.

    The target is checked first (:func:`check_output_dir`). The old directory is kept as
    ``<final>.old`` until the new one is in place, so at every moment one complete copy exists;
    ``bioattn.checkpoint.resolve_checkpoint_dir`` falls back to it. A file-system error becomes
    a one-line :class:`BioattnError`.
    """
    final = check_output_dir(final, what)
    existing = _lstat(final)
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else 0o777 & ~current_umask()
    _make_parent(final, what)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise BioattnError(f"cannot write {what} {final}: {exc.strerror or exc}") from None
    old = final.with_name(final.name + ".old")
    try:
        fill(tmp)
        _apply_umask(tmp)
        os.chmod(tmp, mode)
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists() and old.exists():
            os.replace(old, final)
        if isinstance(exc, OSError):
            raise _write_error(exc, what, final, existing is not None) from exc
        raise
    _fsync_dir(final.parent)
    return final
