"""A private OpenSSH server on 127.0.0.1 for the device tests: its own host key, authorized key and config in
a temporary folder, started and stopped by its PID; nothing of the host's ssh setup is read or changed
(``/run/sshd``, the privilege-separation folder sshd requires when run as root, is created if missing)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def missing() -> str | None:
    """Why the loopback device cannot run here, or None."""
    if not Path(SSHD).is_file():
        return "openssh-server is not installed (.ci/run installs Debian's openssh-server)"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "the OpenSSH client (ssh, ssh-keygen) is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    folder: Path
    port: int
    process: subprocess.Popen
    user: str

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    @property
    def client_config(self) -> str:
        return str(self.folder / "client_config")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start(folder: Path) -> Sshd:
    """Start sshd on a free loopback port, accepting only a key made here; wait until it listens."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key", "other_key"):
        _keygen(folder / name)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port, user = _free_port(), os.environ.get("USER") or _user()
    (folder / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {folder / 'host_key'}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                f"AllowUsers {user}",
            ]
        )
        + "\n"
    )
    host_key = " ".join((folder / "host_key.pub").read_text().split()[:2])
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    (folder / "client_config").write_text(_client_config(folder, "client_key"))
    (folder / "other_config").write_text(_client_config(folder, "other_key"))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(folder / "sshd.log", "wb")  # noqa: SIM115  (sshd writes it for its whole life)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Sshd(folder, port, process, user)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("sshd did not listen within 10 s")


def _client_config(folder: Path, key: str) -> str:
    return (
        "Host 127.0.0.1\n"
        f"  IdentityFile {folder / key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {folder / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n"
        "  LogLevel ERROR\n"
    )


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
