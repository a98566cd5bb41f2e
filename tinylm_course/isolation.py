"""Running a submission where the checks cannot reach it.

The grader runs the *worked* lab in a kernel that never executes a line of the submission.  Just
before each exercise's answer cell, the kernel forks: the copy, the **answer process**, runs the
submission's answer and then the lab's cells up to the exercise's last check, with every output
thrown away.  The kernel itself goes on with the worked answer.  At each check:

- the values the check reads come from the answer process as **plain data** (numbers, strings,
  lists, tuples, dicts, sets, numpy arrays, torch tensors), rebuilt in the kernel by this module's
  decoder, which makes nothing else: no object of the submission's classes, no code;
- a function of the submission that the check calls is a :class:`Remote`: calling it sends the
  arguments (plain data) to the answer process, which runs the function there and sends back the
  result (plain data); a function of the check's passed to it runs in the kernel when called
  (a :class:`Callback`);
- a torch module (a model the submission filled or trained) arrives as its numbers: the kernel
  copies its own module of the same class and loads the submission's parameters and buffers into
  it;
- everything else the check uses (numpy, torch, the lab's models, the course's own functions) is
  the kernel's own.

Whatever the submission does to its own process (patching numpy, builtins, the interpreter or
IPython's machinery) therefore stays there, and the check, running in the kernel, sees only data.
The answer process is killed when its exercise is done, when it runs past its budget, or when
the kernel dies (``PR_SET_PDEATHSIG`` on Linux).  It is not a security sandbox: the submission
still runs as the grading user, with that user's files (see README).

The kernel side is :func:`start`, :func:`run_exercise`, :func:`before_check` and :func:`finish`;
the grader (:mod:`tinylm_course.grading`) writes cells that call them.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import select
import signal
import struct
import sys
import time
from collections import Counter, OrderedDict, defaultdict

import numpy as np

PR_SET_PDEATHSIG = 1
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
FRAME = struct.Struct(">Q")
MAX_DEPTH = 64
"""How deeply plain data may nest."""

NOT_RUN_YET = "the answer process has not sent this check's values"
UNREADABLE = "which the checks cannot read: they read plain data (numbers, strings, lists, dicts, arrays, tensors)"


class SubmissionError(Exception):
    """What the submission did wrong, in words the report shows (raised in the kernel)."""


class NotPlainData(TypeError):
    """A value that cannot cross from the answer process to the kernel."""


# --------------------------------------------------------------------------- plain data

CONTAINERS = {"Counter": Counter, "OrderedDict": OrderedDict, "defaultdict": dict}
"""Mapping types kept by name (a defaultdict arrives as a dict: its factory is code)."""


def _plain(value, arrays: list, depth: int = 0, callables: list | None = None):
    """``value`` as a JSON-able node, its arrays appended to ``arrays``; or :class:`NotPlainData`.
    With a list ``callables``, a function is appended to it and sent as a *callback*: the other
    side gets a stand-in that asks this side to run it (a check passing its own function, such as
    a model's ``word_logp``, to the submission's)."""
    if depth > MAX_DEPTH:
        raise NotPlainData("data nested more than 64 levels deep")
    if value is None or type(value) in (bool, str):
        return {"v": value}
    if isinstance(value, bool):
        return {"v": bool(value)}
    if isinstance(value, int):
        return {"int": str(int(value))}
    if isinstance(value, float):
        return {"float": repr(float(value))}
    if isinstance(value, complex):
        return {"complex": [repr(value.real), repr(value.imag)]}
    if isinstance(value, str):
        return {"v": str(value)}
    if isinstance(value, (bytes, bytearray)):
        arrays.append(np.frombuffer(bytes(value), dtype=np.uint8))
        return {"bytes": len(arrays) - 1}
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        array = np.asarray(value)
        if array.dtype.kind not in "biufcUSmM":
            raise NotPlainData(f"a numpy array of dtype {array.dtype}")
        arrays.append(np.array(array, order="C"))       # a copy that keeps 0-d as 0-d (ascontiguousarray would not)
        return {"array" if isinstance(value, np.ndarray) else "scalar": len(arrays) - 1}
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        arrays.append(np.array(tensor.numpy(), order="C"))
        return {"tensor": len(arrays) - 1, "dtype": dtype}
    if isinstance(value, range):
        return {"range": [value.start, value.stop, value.step]}
    if isinstance(value, (list, tuple, set, frozenset)):
        kind = next(k for k in (list, tuple, set, frozenset) if isinstance(value, k)).__name__
        return {kind: [_plain(v, arrays, depth + 1, callables) for v in value]}
    if isinstance(value, dict):
        kind = next((name for name, cls in CONTAINERS.items() if type(value) is cls or
                     (name == "defaultdict" and isinstance(value, defaultdict))), "dict")
        return {"dict": [[_plain(k, arrays, depth + 1, callables), _plain(v, arrays, depth + 1, callables)]
                         for k, v in value.items()], "as": kind}
    if callables is not None and callable(value) and not isinstance(value, type):
        callables.append(value)
        return {"callback": len(callables) - 1}
    raise NotPlainData(f"a {type(value).__module__}.{type(value).__qualname__}")


def encode(value, callables: list | None = None) -> bytes:
    """``value`` as bytes: a JSON description and numpy's own format for arrays (no pickle).
    Functions in it are refused, or appended to ``callables`` and sent as callbacks."""
    arrays: list = []
    node = json.dumps(_plain(value, arrays, 0, callables)).encode()
    parts = [FRAME.pack(len(node)), node, FRAME.pack(len(arrays))]
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
        parts += [FRAME.pack(len(data)), data]
    return b"".join(parts)


def decode(data: bytes, callback=None):
    """The value :func:`encode` wrote; anything else raises ``ValueError``.  Builds only plain
    data: numpy's loader refuses pickled objects, and the description names no class.  A
    callback ``i`` becomes ``callback(i)``, a stand-in made by the receiving side (refused when
    ``callback`` is None)."""
    view = memoryview(data)

    def take(n):
        nonlocal view
        if len(view) < n:
            raise ValueError("the data ends too early")
        part, view = view[:n], view[n:]
        return bytes(part)

    node = json.loads(take(FRAME.unpack(take(FRAME.size))[0]))
    arrays = [np.load(io.BytesIO(take(FRAME.unpack(take(FRAME.size))[0])), allow_pickle=False)
              for _ in range(FRAME.unpack(take(FRAME.size))[0])]
    if len(view):
        raise ValueError("unexpected bytes after the data")
    return _build(node, arrays, callback)


def _build(node, arrays: list, callback=None):
    if not isinstance(node, dict) or not node:
        raise ValueError("not a data description")
    kind, value = next(iter(node.items()))
    if kind == "v":
        if value is None or isinstance(value, (bool, str)):
            return value
        raise ValueError("a plain value of the wrong type")
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "complex":
        return complex(float(value[0]), float(value[1]))
    if kind == "bytes":
        return bytes(arrays[value])
    if kind == "array":
        return arrays[value]
    if kind == "scalar":
        return arrays[value][()]
    if kind == "tensor":
        import torch

        tensor = torch.from_numpy(np.array(arrays[value]))
        return tensor.to(getattr(torch, node["dtype"])) if node["dtype"] == "bfloat16" else tensor
    if kind == "range":
        return range(*[int(v) for v in value])
    if kind in ("list", "tuple", "set", "frozenset"):
        items = [_build(v, arrays, callback) for v in value]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
    if kind == "dict":
        mapping = CONTAINERS.get(node.get("as"), dict)
        return mapping((_build(k, arrays, callback), _build(v, arrays, callback)) for k, v in value)
    if kind == "callback" and callback is not None:
        return callback(int(value))
    raise ValueError(f"unknown kind of data {kind!r}")


# --------------------------------------------------------------------------- frames on a pipe

def _send(fd: int, payload: bytes) -> None:
    data = FRAME.pack(len(payload)) + payload
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes | None:
    chunks, remaining = [], n
    while remaining:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int, deadline: float | None):
    """The next message (a JSON header and a blob) or None when the other side is gone; raises
    ``TimeoutError`` at ``deadline``."""
    size = _read_exactly(fd, FRAME.size, deadline)
    if size is None:
        return None
    payload = _read_exactly(fd, FRAME.unpack(size)[0], deadline)
    if payload is None:
        return None
    head_size = FRAME.unpack(payload[:FRAME.size])[0]
    header = json.loads(payload[FRAME.size:FRAME.size + head_size])
    return header, payload[FRAME.size + head_size:]


def _message(header: dict, blob: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return FRAME.pack(len(head)) + head + blob


# --------------------------------------------------------------------------- the answer process

def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    libc = _libc()
    if libc is not None and sys.platform.startswith("linux"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _isolate() -> None:
    """Best effort: a network namespace of its own, so that the answer process cannot connect to
    the kernel's ports (unprivileged user namespaces permitting)."""
    libc = _libc()
    if libc is not None and sys.platform.startswith("linux"):
        libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) < 500 else text[:497] + "..."


def _answer_process(shell, steps: list, answer: str, exercise: str, to_kernel: int, from_kernel: int) -> None:
    """The body of the forked copy; it never returns."""
    try:
        os.setpgid(0, 0)
        die_with_parent()
        _isolate()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        shell.display_pub.publish = lambda *args, **kwargs: None
        namespace = shell.user_ns
        functions: dict[tuple[int, str], object] = {}
        errors = []
        for step in [("answer", answer, 0)] + steps:
            if step[0] == "check":
                _, key, names = step
                values = {}
                for name in names:
                    values[name] = _snapshot(namespace, name, functions, key)
                _send(to_kernel, _message({"check": key, "values": {n: v[0] for n, v in values.items()},
                                           "sizes": [len(v[1]) for v in values.values()]},
                                          b"".join(v[1] for v in values.values())))
                continue
            source = step[1]
            try:
                exec(compile(shell.transform_cell(source), f"<{exercise}: {step[0]}>", "exec"), namespace)
            except BaseException as exc:  # the report names the step and the error
                errors.append("answer" if step[0] == "answer" else f"code cell {step[2]}")
                _send(to_kernel, _message({"error": errors[-1], "message": _describe(exc)}))
        _send(to_kernel, _message({"ready": True}))
        _serve(functions, to_kernel, from_kernel)
    finally:
        os._exit(0)


def _snapshot(namespace: dict, name: str, functions: dict, key: int) -> tuple[str, bytes]:
    """How one name looks at a check: ("data", bytes), ("callable", b""), ("module", b""),
    ("torch-module <class> <digest>", b""), ("unreadable: <type>", b"") or ("undefined", b"")."""
    if name not in namespace:
        return "undefined", b""
    value = namespace[name]
    if isinstance(value, type(sys)):
        return "module", b""
    if _is_torch_module(value):
        functions[(key, name)] = value
        return f"torch-module {_class_name(value)} {state_digest(value)}", b""
    if callable(value) and not isinstance(value, (np.ndarray, np.generic)) and not _is_tensor(value):
        functions[(key, name)] = value
        return "callable", b""
    try:
        return "data", encode(value)
    except Exception as exc:
        return f"unreadable: {exc}", b""


def _is_torch_module(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def _class_name(value) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def state_digest(module) -> str:
    """A fingerprint of a torch module's numbers: the names, dtypes, shapes and bytes of its
    parameters and buffers."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.detach().cpu().contiguous().view(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _serve(functions: dict, to_kernel: int, from_kernel: int) -> None:
    """Run the submission's functions for the kernel's checks until told to stop."""
    while True:
        received = _receive(from_kernel, None)
        if received is None or "exit" in received[0]:
            return
        _send(to_kernel, _run_call(functions, received, to_kernel, from_kernel))


def _run_call(functions: dict, received, to_kernel: int, from_kernel: int) -> bytes:
    """The reply to the kernel's request to run one of the submission's functions, or to send the
    numbers of one of its torch modules."""
    header, blob = received
    if "state" in header:
        try:
            state = functions[(header["check"], header["state"])].state_dict()
            return _message({"ok": True}, encode(dict(state)))
        except BaseException as exc:
            return _message({"ok": False, "message": f"its numbers could not be sent ({_describe(exc)})"})
    try:
        args, kwargs = decode(blob, lambda i: Callback(i, functions, to_kernel, from_kernel))
        result = functions[(header["check"], header["name"])](*args, **kwargs)
    except BaseException as exc:
        return _message({"ok": False, "message": f"raised {_describe(exc)}"})
    try:
        return _message({"ok": True}, encode(result))
    except BaseException as exc:
        return _message({"ok": False, "message": f"returned {exc}, {UNREADABLE}"})


class Callback:
    """In the answer process, a function of the check's, passed to one of the submission's:
    calling it asks the kernel to run it on plain data (the kernel's code, the kernel's objects)."""

    def __init__(self, index: int, functions: dict, to_kernel: int, from_kernel: int):
        self.index, self.functions, self.to_kernel, self.from_kernel = index, functions, to_kernel, from_kernel

    def __call__(self, *args, **kwargs):
        _send(self.to_kernel, _message({"callback": self.index}, encode([list(args), dict(kwargs)])))
        while True:
            received = _receive(self.from_kernel, None)
            if received is None or "exit" in received[0]:
                os._exit(0)
            if "callback_reply" in received[0]:
                break
            # the callback called one of the submission's functions in turn
            _send(self.to_kernel, _run_call(self.functions, received, self.to_kernel, self.from_kernel))
        header, blob = received
        if not header.get("ok"):
            raise RuntimeError(header.get("message", "the check's function failed"))
        return decode(blob)


# --------------------------------------------------------------------------- the kernel side

class AnswerProcess:
    """The kernel's handle on one forked answer process."""

    def __init__(self, label: str, pid: int, reader: int, writer: int, budget: float):
        self.label, self.pid, self.reader, self.writer, self.budget = label, pid, reader, writer, budget
        self.values: dict[int, dict[str, tuple[str, bytes]]] = {}
        self.errors: list[tuple[str, str]] = []
        self.failure: str | None = None      # timed out, or stopped: it can run nothing more

    def collect(self) -> None:
        """Read what the process sends until it has run every step, within its budget."""
        deadline = time.monotonic() + self.budget
        while True:
            try:
                received = _receive(self.reader, deadline)
            except TimeoutError:
                self.failure = f"took longer than {self.budget:.0f} s, its budget"
                self.kill()
                return
            except (ValueError, OSError) as exc:
                self.failure = f"sent something the grader cannot read ({_describe(exc)})"
                self.kill()
                return
            if received is None:
                self.failure = "stopped (it exited, or was killed)"
                self.wait()
                return
            header, blob = received
            if header.get("ready"):
                return
            if "error" in header:
                self.errors.append((str(header["error"]), str(header.get("message", ""))))
            elif "check" in header:
                values, offset = {}, 0
                for (name, kind), size in zip(header["values"].items(), header["sizes"]):
                    values[name] = (kind, blob[offset:offset + size])
                    offset += size
                self.values[int(header["check"])] = values

    def call(self, key: int, name: str, args: tuple, kwargs: dict):
        if self.failure:
            raise SubmissionError(f"{name}() cannot run: the process running the answer {self.failure}")
        callbacks: list = []
        try:
            request = encode([list(args), dict(kwargs)], callbacks)
        except NotPlainData as exc:
            raise SubmissionError(f"{name}() was called with {exc}, which the grader cannot pass on") from None
        deadline = time.monotonic() + self.budget
        try:
            _send(self.writer, _message({"check": key, "name": name}, request))
            received = _receive(self.reader, deadline)
            while received is not None and "callback" in received[0]:
                _send(self.writer, _run_callback(callbacks, received))
                received = _receive(self.reader, deadline)
        except TimeoutError:
            self.failure = f"took longer than {self.budget:.0f} s in {name}()"
            self.kill()
            raise SubmissionError(f"{name}() {self.failure.split(' in ')[0]}") from None
        except OSError:
            received = None
        if received is None:
            self.failure = "stopped (it exited, or was killed)"
            raise SubmissionError(f"{name}() stopped the process running the answer")
        header, blob = received
        if not header.get("ok"):
            raise SubmissionError(f"{name}() {header.get('message', 'failed')}")
        try:
            return decode(blob)
        except (ValueError, KeyError, TypeError) as exc:
            raise SubmissionError(f"{name}() returned something that is not plain data ({_describe(exc)})") from None

    def state(self, key: int, name: str) -> dict:
        """The parameters and buffers of the submission's torch module ``name``, as tensors."""
        if self.failure:
            raise SubmissionError(f"`{name}` cannot be read: the process running the answer {self.failure}")
        try:
            _send(self.writer, _message({"check": key, "state": name}))
            received = _receive(self.reader, time.monotonic() + self.budget)
        except TimeoutError:
            self.failure = f"took longer than {self.budget:.0f} s to send `{name}`"
            self.kill()
            raise SubmissionError(self.failure) from None
        except OSError:
            received = None
        if received is None:
            self.failure = "stopped (it exited, or was killed)"
            raise SubmissionError(f"`{name}` cannot be read: the process running the answer {self.failure}")
        header, blob = received
        if not header.get("ok"):
            raise SubmissionError(f"`{name}`: {header.get('message', 'failed')}")
        try:
            state = decode(blob)
        except (ValueError, KeyError, TypeError) as exc:
            raise SubmissionError(f"`{name}` sent something that is not plain data ({_describe(exc)})") from None
        if not isinstance(state, dict):
            raise SubmissionError(f"`{name}` sent no parameters")
        return state

    def kill(self) -> None:
        for kill in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: os.kill(self.pid, signal.SIGKILL)):
            try:
                kill()
            except OSError:
                pass
        self.wait()

    def wait(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def close(self) -> None:
        if not self.failure:
            try:
                _send(self.writer, _message({"exit": True}))
            except OSError:
                pass
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.02)
        self.kill()
        for fd in (self.reader, self.writer):
            try:
                os.close(fd)
            except OSError:
                pass


def _run_callback(callbacks: list, received) -> bytes:
    """The kernel's reply to the answer process asking it to run one of the check's functions
    (on plain data; the result goes back as plain data)."""
    header, blob = received
    try:
        args, kwargs = decode(blob)
        result = callbacks[int(header["callback"])](*args, **kwargs)
    except SubmissionError as exc:
        return _message({"callback_reply": True, "ok": False, "message": str(exc)})
    except Exception as exc:
        return _message({"callback_reply": True, "ok": False, "message": f"the check's function raised {_describe(exc)}"})
    try:
        return _message({"callback_reply": True, "ok": True}, encode(result))
    except NotPlainData as exc:
        return _message({"callback_reply": True, "ok": False, "message": f"the check's function returned {exc}"})


class Remote:
    """A function of the submission, seen from the kernel: calling it runs it in the answer process."""

    def __init__(self, process: AnswerProcess, key: int, name: str):
        self._process, self._key, self.__name__ = process, key, name

    def __call__(self, *args, **kwargs):
        return self._process.call(self._key, self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<the submission's {self.__name__}, run in its own process>"


class Crossing:
    """The worked answer's own function under ``--verify``, called as a submission's would be: its
    arguments and its result cross as plain data, so a check that needs anything else is found."""

    def __init__(self, function, name: str):
        self._function, self.__name__ = function, name

    def __call__(self, *args, **kwargs):
        callbacks: list = []
        try:
            args, kwargs = decode(encode([list(args), dict(kwargs)], callbacks), callbacks.__getitem__)
        except NotPlainData as exc:
            raise SubmissionError(f"{self.__name__}() was called with {exc}, which the grader cannot pass on") from None
        result = self._function(*args, **kwargs)
        try:
            return decode(encode(result))
        except NotPlainData as exc:
            raise SubmissionError(f"{self.__name__}() returned {exc}, {UNREADABLE}") from None


STATE: dict = {"exercises": {}}
"""The kernel's record of the exercises being graded."""


def start() -> None:
    """The grader's first cell: die with the process that started the kernel, which the grader
    starts so that it dies with the grader."""
    die_with_parent()
    if os.getppid() == 1:  # the grader is already gone
        os._exit(1)


def _fork(shell, label: str, answer: str, steps: list, exercise: str, budget: float) -> AnswerProcess:
    to_kernel_r, to_kernel_w = os.pipe()
    from_kernel_r, from_kernel_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(to_kernel_r)
        os.close(from_kernel_w)
        _answer_process(shell, steps, answer, exercise, to_kernel_w, from_kernel_r)
    os.close(to_kernel_w)
    os.close(from_kernel_r)
    process = AnswerProcess(label, pid, to_kernel_r, from_kernel_w, budget)
    process.collect()
    return process


def run_exercise(exercise: str, variants: list, steps: list, budget: float, display: str,
                 tainted: list, expected: dict) -> None:
    """Fork one answer process per variant ``(label, answer source)``; the one called ``display``
    is the submission whose checks the lab's check cells show.  Raises :class:`SubmissionError`
    when the displayed answer failed before its checks."""
    from IPython import get_ipython

    shell = get_ipython()
    record = {"processes": {}, "display": display, "tainted": set(tainted), "steps": steps, "expected": expected,
              "probes": {}, "saved": None}
    STATE["exercises"][exercise] = record
    for label, answer in variants:
        record["processes"][label] = _fork(shell, label, answer, steps, exercise, budget)
    shown = record["processes"].get(display)
    if shown is not None and shown.errors:
        where, message = shown.errors[0]
        raise SubmissionError(f"raised {message}" if where == "answer" else
                              f"made {where} of the lab, which uses it, raise {message}")
    if shown is not None and shown.failure:
        raise SubmissionError(shown.failure)


def _swap_in(shell, record: dict, key: int, values: dict, process: AnswerProcess | None) -> dict:
    """Put a variant's values into the namespace; return what to put back."""
    namespace, saved = shell.user_ns, {}
    missing = object()
    for name, (kind, blob) in values.items():
        tainted = name in record["tainted"]
        if kind == "module" or (kind == "callable" and not tainted):
            continue
        if kind.startswith("torch-module "):
            own = namespace.get(name)
            module = _torch_module(name, kind, own, process, key)
            if module is not own:
                saved[name] = own
                namespace[name] = module
            continue
        if kind.startswith("unreadable"):
            if not tainted:
                continue
            raise SubmissionError(f"`{name}` is {kind.split(': ', 1)[1]}, {UNREADABLE}")
        saved[name] = namespace.get(name, missing)
        if kind == "undefined":
            namespace.pop(name, None)
        elif kind == "callable":
            namespace[name] = Remote(process, key, name) if process is not None else Crossing(saved[name], name)
        else:
            namespace[name] = decode(blob)
    return {name: value for name, value in saved.items()} | {"__missing__": missing}


def _torch_module(name: str, kind: str, own, process: AnswerProcess | None, key: int):
    """The submission's torch module ``name`` rebuilt in the kernel: the kernel's own module of
    the same class, copied, with the submission's parameters and buffers loaded into it (so no
    code of the submission's runs); the kernel's own module itself when the numbers are equal."""
    import copy

    _, class_name, digest = kind.split(" ")
    if not _is_torch_module(own) or _class_name(own) != class_name:
        raise SubmissionError(f"`{name}` is a {class_name} where the lab has "
                              f"{'nothing' if own is None else 'a ' + _class_name(own)}")
    if digest == state_digest(own) or process is None:
        return own
    state = process.state(key, name)
    module = copy.deepcopy(own)
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise SubmissionError(f"`{name}`'s parameters do not fit the lab's {class_name} "
                              f"({_describe(exc).splitlines()[0]})") from None
    return module


def _restore(shell, saved: dict) -> None:
    missing = saved.pop("__missing__")
    for name, value in saved.items():
        if value is missing:
            shell.user_ns.pop(name, None)
        else:
            shell.user_ns[name] = value


def _own_values(shell, names: list) -> dict:
    """The kernel's own values of ``names``, as an answer process would send them (--verify)."""
    functions: dict = {}
    return {name: _snapshot(shell.user_ns, name, functions, -1) for name in names}


def before_check(exercise: str, key: int, names: list, source: str) -> None:
    """The first line of a check cell: try the check on each probe's values (captured, recorded),
    then put the displayed submission's values in place for the check itself; they are put back
    when the cell ends."""
    from IPython import get_ipython

    shell = get_ipython()
    record = STATE["exercises"][exercise]
    for label, process in record["processes"].items():
        if label != record["display"]:
            record["probes"].setdefault(label, {})[key] = _try_check(shell, record, key, process, source)
    if record["display"] == "self":
        saved = _swap_in(shell, record, key, _own_values(shell, names), None)
    else:
        process = record["processes"][record["display"]]
        if key not in process.values:
            raise SubmissionError(f"the check cannot run: {process.failure or NOT_RUN_YET}")
        saved = _swap_in(shell, record, key, process.values[key], process)

    def put_back(*args):
        shell.events.unregister("post_run_cell", put_back)
        _restore(shell, saved)
    shell.events.register("post_run_cell", put_back)


def _try_check(shell, record: dict, key: int, process: AnswerProcess, source: str) -> tuple[bool, str]:
    """Run a check on a probe's values: (passed, why not).  ``why`` starts with "crashed: " when
    the probe's own function failed during the check, rather than the check catching it."""
    if key not in process.values:
        return False, f"no values ({process.failure or NOT_RUN_YET})"
    out, stdout = io.StringIO(), sys.stdout
    try:
        saved = _swap_in(shell, record, key, process.values[key], process)
    except SubmissionError as exc:
        return False, str(exc)
    try:
        sys.stdout = out
        exec(compile(shell.transform_cell(source), "<check>", "exec"), shell.user_ns)
    except SubmissionError as exc:
        return False, f"crashed: {exc}"
    except BaseException as exc:  # a failed check is what a probe hopes for
        return False, _describe(exc)
    finally:
        sys.stdout = stdout
        _restore(shell, saved)
    expected = record["expected"].get(str(key), "")
    return (True, "") if out.getvalue() == expected else (False, "printed something else")


def finish(exercise: str, verify: bool, wrong: dict) -> None:
    """After an exercise's last check: end its answer processes; with ``verify``, raise if a probe
    passed its checks (the missing answer; a wrong answer, which must also run without error)."""
    record = STATE["exercises"].pop(exercise)
    for process in record["processes"].values():
        process.close()
    if not verify:
        return
    problems = []
    for label, results in record["probes"].items():
        process = record["processes"][label]
        if label == "missing":
            passing = [str(number) for number, (key, (passed, _)) in enumerate(sorted(results.items()), start=1)
                       if passed]
            if passing:
                problems.append(f"check {', '.join(passing)} of exercise {exercise} passes without its answer")
            if process.failure and process.failure.startswith("took longer"):
                problems.append(f"exercise {exercise} without its answer {process.failure}: "
                                "the exercise edition would hang there")
            continue
        why_wrong = wrong.get(label, label)
        crashes = [why.removeprefix("crashed: ") for _, why in results.values() if why.startswith("crashed: ")]
        if process.errors or process.failure or crashes:
            where, message = (process.errors[0] if process.errors else
                              ("answer", process.failure) if process.failure else ("check", crashes[0]))
            problems.append(f"the wrong answer of exercise {exercise} \"{why_wrong}\" does not run "
                            f"({where}: {message}); a wrong answer must run, for the checks to catch it")
        elif results and all(passed for passed, _ in results.values()):
            problems.append(f"the wrong answer of exercise {exercise} \"{why_wrong}\" passes every check")
    if problems:
        raise AssertionError("; ".join(problems))
