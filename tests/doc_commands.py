"""A warm ``bioattn`` for the documentation's shell blocks (tests/test_docs.py).

Every ``bioattn`` command imports torch, timm and the models first, which costs seconds of CPU
before any work; the documentation runs dozens of commands. ``serve(socket_path)`` imports them
once, then forks one child per request; the child takes the caller's working directory,
environment, arguments and standard streams, runs ``bioattn.cli.main`` and sends back its exit
status. ``client()`` is the ``bioattn`` executable the shell blocks find first on their ``PATH``
(``python doc_commands.py client ARGS...``): it imports nothing of bioattn and passes its own
streams to the server.

The server runs no torch operation before forking (so no thread pool is inherited), and each
child restores the default SIGCHLD handling, so commands that start processes wait for them.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys

SOCKET_ENV = "BIOATTN_DOC_SOCKET"


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!I", len(payload)) + payload)


def _receive(sock: socket.socket) -> bytes:
    header = _exactly(sock, 4)
    return _exactly(sock, struct.unpack("!I", header)[0])


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _run_request(conn: socket.socket) -> None:
    """In the forked child: take the caller's streams and context, run the command, report."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fds = array.array("i")
    message, ancillary, _, _ = conn.recvmsg(1, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    request = json.loads(_receive(conn))
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["bioattn", *request["argv"]]
    code = 1
    try:
        from bioattn.cli import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # a crash of the command: its traceback goes to its stderr
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _send(conn, json.dumps({"code": int(code)}).encode())
        conn.close()
        os._exit(0)


def serve(socket_path: str) -> None:
    """Import what every command needs, then answer requests until killed."""
    import importlib

    # what the commands import on their way (each child would import it again otherwise)
    for module in ("torch", "timm", "matplotlib.figure", "matplotlib.backends.backend_agg", "scipy.stats",
                   "imagecorruptions", "torchattacks", "bioattn.cli", "bioattn.models", "bioattn.train",
                   "bioattn.evaluate.suites", "bioattn.evaluate.report", "bioattn.attention.plots",
                   "bioattn.demo", "bioattn.generalisation", "bioattn.zoo_builder", "bioattn.results.page"):
        try:
            importlib.import_module(module)
        except ImportError:  # a module being renamed: its command imports what it needs itself
            pass

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            _run_request(conn)
        conn.close()


def client(argv: list[str]) -> int:
    """Run ``bioattn ARGV`` in the server named by $BIOATTN_DOC_SOCKET with this process's
    streams, working directory and environment; return its exit status."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ[SOCKET_ENV])
    sock.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    _send(sock, json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode())
    try:
        return int(json.loads(_receive(sock))["code"])
    except ConnectionError:
        print("error: the command's process ended without an exit status", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[2:]))
