"""The devices a bench runs on: this machine (``local``) or one reached with the user's own OpenSSH client
(``ssh://[user@]host[:port]``), so ~/.ssh/config, keys, agents and jump hosts work as they do for ``ssh``.

A device takes a folder (``put``: shipped as one tar stream into a temporary folder there, renamed at the
end, so a dropped connection leaves no half-shipped folder under the final name), runs a command in it
(``run``, with a timeout), and gives back one file of bounded size (``get``). Every failure is a
``DeviceError``: one line naming the device.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.errors import ArtifactError, EdgebenchError

_SSH_URL = re.compile(
    r"^ssh://(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?/?$"
)
CONNECT_TIMEOUT_S = 10
MAX_RESULT_BYTES = 64 << 20  # a device's answer larger than this is not a bench result
# An ssh device stops its own command at the timeout (its `timeout`, where it has one: the command's whole
# process group, so nothing keeps running there); the ssh client here is killed this much later if not.
REMOTE_GRACE_S = 15
TIMED_OUT = (124, 137)  # `timeout`'s exit status: the command stopped at the limit (137: after SIGKILL)
ANSWER_TIMEOUT_S = 60  # after a command timed out: whether the device still answers at all
EMULATED_MACHINES = {"arm64": "aarch64"}  # an emulated device's kind (device.json) -> its uname -m


class DeviceError(EdgebenchError):
    """A device could not be reached, refused us, or answered something unusable."""


class DeviceTimeout(DeviceError):
    """A command there ran past its timeout and was stopped (there and here)."""


@dataclass(frozen=True)
class Device:
    """Where a bench runs: ``url`` is ``local`` or ``ssh://[user@]host[:port]``."""

    url: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    ssh_config: str | None = None  # an ssh_config(5) file passed as ``-F`` (default: the user's)
    options: tuple = field(default=())  # extra ``-o Key=Value`` for ssh

    python: str | None = None  # the interpreter a device brings with it (an emulated one's wrapper)

    @classmethod
    def parse(cls, url: str, ssh_config: str | None = None) -> Device:
        if url == "local":
            return cls("local")
        if url.startswith("qemu://"):  # an emulated device made by `edgebench device arm64` (runs here)
            return cls.emulated(url)
        match = _SSH_URL.match(url or "")
        if not match:
            raise DeviceError(f"device {url!r} is not 'local' or ssh://[user@]host[:port]")
        port = int(match["port"]) if match["port"] else None
        if port is not None and not 0 < port < 65536:
            raise DeviceError(f"device {url}: port {port} is out of range")
        return cls(url, match["user"], match["host"].strip("[]"), port, ssh_config)

    @classmethod
    def emulated(cls, url: str) -> Device:
        folder = Path(url.removeprefix("qemu://"))
        python = folder / "bin" / "python"
        if not (folder / "device.json").is_file() or not python.is_file():
            raise DeviceError(f"{url}: no emulated device there (build one with edgebench device arm64)")
        return cls(url, python=str(python.resolve()))

    def machine(self, timeout: float) -> str:
        """What ``uname -m`` says there (an emulated device: its guest's): the machine a bundle's C runner
        must be built for."""
        if self.url.startswith("qemu://"):
            path = Path(self.url.removeprefix("qemu://")) / "device.json"
            try:
                kind = json.loads(path.read_text()).get("kind")
            except (OSError, ValueError, AttributeError) as exc:
                raise DeviceError(f"{self.url}: cannot read {path}: {exc}") from None
            return EMULATED_MACHINES.get(kind, str(kind))
        if self.local:
            return platform.machine()
        done = self.run(["uname", "-m"], timeout)
        if done.returncode != 0:
            raise DeviceError(f"{self.url}: uname -m failed there: {last_line(done.stderr)}")
        return done.stdout.decode(errors="replace").strip()

    @property
    def local(self) -> bool:
        return self.url == "local" or self.url.startswith("qemu://")

    @property
    def name(self) -> str:
        """A file-name-safe name for the device's report folder: ``local``, ``root@127.0.0.1-2222``."""
        if self.url.startswith("qemu://"):
            return re.sub(r"[^A-Za-z0-9@._-]", "_", Path(self.url.removeprefix("qemu://")).name)
        if self.local:
            return "local"
        who = f"{self.user}@" if self.user else ""
        return re.sub(r"[^A-Za-z0-9@._-]", "_", f"{who}{self.host}" + (f"-{self.port}" if self.port else ""))

    def ssh_argv(self, remote_command: str) -> list[str]:
        """``ssh ... -- COMMAND`` in batch mode: no password prompt can hang a bench."""
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        argv += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        for option in self.options:
            argv += ["-o", option]
        if self.port:
            argv += ["-p", str(self.port)]
        target = f"{self.user}@{self.host}" if self.user else self.host
        return [*argv, "--", target, remote_command]

    def _argv(self, command: list[str], cwd: str | None, timeout: float) -> list[str]:
        """``command`` (argv) as this device runs it: as is locally; through ssh as one quoted line, under
        the device's own ``timeout`` where it has one."""
        if self.local:
            return command
        line = shlex.join(command)
        limited = f"timeout -k 5 {math.ceil(timeout)} {line}"
        line = f"if command -v timeout >/dev/null 2>&1; then exec {limited}; else exec {line}; fi"
        return self.ssh_argv(f"cd {shlex.quote(cwd)} && {line}" if cwd else line)

    def run(self, command: list[str], timeout: float, stdin=None, stdout=subprocess.PIPE, cwd=None):
        """Run ``command`` there (in ``cwd``); a device that cannot be reached is a ``DeviceError``, a
        command past ``timeout`` a ``DeviceTimeout`` (stopped with every process it started, here or there).
        The command's own failures come back in the returned process."""
        argv = self._argv(command, None if cwd is None else str(cwd), timeout)
        if shutil.which(argv[0]) is None:
            raise DeviceError(f"{self.url}: {argv[0]} is not installed here")
        t0 = time.monotonic()
        with subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=cwd if self.local else None,
            start_new_session=True,  # its own process group: a timeout stops what it started too
        ) as proc:
            try:
                out, err = proc.communicate(timeout=timeout if self.local else timeout + REMOTE_GRACE_S)
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                raise DeviceTimeout(self._late(timeout)) from None
            except BaseException:  # Ctrl-C here: its own session does not get the terminal's SIGINT
                _stop_group(proc)
                raise
        done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if not self.local and done.returncode in TIMED_OUT and time.monotonic() - t0 >= timeout:
            raise DeviceTimeout(self._late(timeout))
        if not self.local and done.returncode == 255:
            raise DeviceError(f"{self.url}: {_ssh_problem(done.stderr)}")
        return done

    def _late(self, timeout: float) -> str:
        return f"{self.url}: no answer within {timeout:g} s (--device-timeout)"

    def answers(self, timeout: float) -> bool:
        """Whether the device still runs a command (after one of its commands timed out)."""
        try:
            return self.run(["true"], timeout).returncode == 0
        except DeviceError:
            return False

    def timed_out(self, exc: DeviceTimeout, what: str, timeout: float, reason: str) -> EdgebenchError:
        """After ``what`` ran past ``timeout`` (``exc``): a failed row of its own (``ArtifactError(reason)``)
        if the device still answers, else ``exc`` (the device is gone: nothing more can run there)."""
        if not self.answers(min(timeout, ANSWER_TIMEOUT_S)):
            return exc
        why = str(exc).removeprefix(f"{self.url}: ")
        return ArtifactError(reason, f"{self.url}: {what}: {why}; stopped there")

    def put(self, folder: Path, remote: str, timeout: float) -> None:
        """Ship ``folder`` to ``remote`` (a path there, relative to the login folder or absolute)."""
        partial = f"{remote}.partial"
        script = (
            f"rm -rf {shlex.quote(partial)} && mkdir -p {shlex.quote(partial)} && "
            f"tar -xf - -C {shlex.quote(partial)} && rm -rf {shlex.quote(remote)} && "
            f"mv {shlex.quote(partial)} {shlex.quote(remote)}"
        )
        with tempfile.TemporaryFile() as stream:
            with tarfile.open(fileobj=stream, mode="w") as tar:
                tar.add(folder, arcname=".")
            stream.seek(0)
            done = self.run(["sh", "-c", script], timeout, stdin=stream)
        if done.returncode != 0:
            raise DeviceError(f"{self.url}: cannot ship {folder.name} there: {last_line(done.stderr)}")

    def get(self, remote: str, timeout: float, limit: int = MAX_RESULT_BYTES) -> bytes:
        """The bytes of the file ``remote`` there, refused past ``limit`` bytes."""
        with tempfile.TemporaryFile() as out:
            done = self.run(["head", "-c", str(limit + 1), remote], timeout, stdout=out)
            if done.returncode != 0:
                raise DeviceError(f"{self.url}: cannot read {remote} there: {last_line(done.stderr)}")
            if out.tell() > limit:
                raise DeviceError(f"{self.url}: {remote} is larger than {limit} bytes: not a bench result")
            out.seek(0)
            return out.read()

    def get_json(self, remote: str, timeout: float, what: str):
        """The JSON document in the file ``remote`` there (``get``'s bound), ``what``'s one-line error if it
        does not parse."""
        try:
            return json.loads(self.get(remote, timeout))
        except ValueError as exc:
            raise DeviceError(f"{self.url}: {what}: the result is not JSON ({exc})") from None

    def remove(self, remote: str, timeout: float) -> None:
        self.run(["rm", "-rf", remote], timeout)


def _stop_group(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group (it leads its own session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended on its own meanwhile
        pass
    proc.communicate()


def last_line(stderr: bytes, default: str = "no message") -> str:
    """The last non-blank line a device's command wrote to stderr: the line that says why it failed."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else default


def _ssh_problem(stderr: bytes) -> str:
    """What ssh's own failure (exit 255) means, in the words a user acts on."""
    text = last_line(stderr)
    if "Permission denied" in text:
        return f"the key was refused ({text}); check the user, the key and the agent"
    if "Connection refused" in text or "No route to host" in text or "timed out" in text:
        return f"unreachable ({text})"
    if "Could not resolve hostname" in text:
        return f"unknown host ({text})"
    if "Host key verification failed" in text:
        return f"its host key is not known or has changed ({text}); connect once with ssh to accept it"
    return f"ssh failed: {text}"
