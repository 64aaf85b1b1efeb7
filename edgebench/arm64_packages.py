"""What an emulated arm64 device is built from: Debian 12's arm64 Python 3.11 and the shared libraries it and
the wheels load, fetched with ``apt-get download`` under a private apt configuration (the host's
architectures, sources, state and lock untouched), and the runtimes' aarch64 wheels, fetched by this
Python's pip for the target platform. Both are pinned with their sha256s in a lock kept beside the
downloads, so a second build fetches nothing and installs the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.fileio import read_json, sha256_file, write_json, write_text

DISTRIBUTION = "Debian 12 (bookworm) arm64"
SUITE = "bookworm"
DEFAULT_SOURCES = (
    "http://deb.debian.org/debian bookworm",
    "http://deb.debian.org/debian bookworm-updates",
    "http://deb.debian.org/debian-security bookworm-security",
)
# python3.11-minimal's and libpython3.11-stdlib's libraries, and what the wheels' native code loads
# (libstdc++, libgomp); none of Debian's maintainer scripts is needed to run them.
DEBS = (
    "python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 zlib1g "
    "libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 "
    "libgomp1 libcrypt1"
).split()
# The runtimes a bundle needs, at the versions edgebench itself pins (pyproject.toml).
WHEEL_DISTS = ("numpy", "pillow", "ai-edge-litert", "onnxruntime", "openvino")
# The wheels' tags differ (ai-edge-litert manylinux_2_27, onnxruntime 2_28, openvino 2_35): all that glibc
# 2.36 runs.
WHEEL_TARGET = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
for _tag in ("manylinux_2_35", "manylinux_2_28", "manylinux_2_27", "manylinux_2_17", "manylinux2014"):
    WHEEL_TARGET += ["--platform", f"{_tag}_aarch64"]


def wheel_requirements() -> list[str]:
    """``name==version`` of WHEEL_DISTS as edgebench's own metadata pins them."""
    pins = {}
    for requirement in importlib.metadata.requires("edgebench") or []:
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)$", requirement.strip())
        if match:
            pins[match[1].lower()] = match[2]
    missing = [name for name in WHEEL_DISTS if name not in pins]
    if missing:
        raise EdgebenchError(f"edgebench's metadata pins no version of {', '.join(missing)}: reinstall it")
    return [f"{name}=={pins[name]}" for name in WHEEL_DISTS]


def host_sources(etc: Path = Path("/etc/apt")) -> list[str]:
    """``URI SUITE`` of the host's apt sources (one-line and deb822 files) for bookworm: its mirrors."""
    text = ""
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        text += "".join(_one_line_entries(path))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        text += "".join(_deb822_entries(path))
    sources = [line for line in dict.fromkeys(text.splitlines()) if line.split()[1].startswith(SUITE)]
    return sources or list(DEFAULT_SOURCES)


def _one_line_entries(path: Path):
    for line in _read(path).splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield f"{words[1].rstrip('/')} {words[2]}\n"


def _deb822_entries(path: Path):
    for stanza in re.split(r"\n\s*\n", _read(path)):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, flags=re.M))
        if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
            for uri in fields.get("URIs", "").split():
                yield from (f"{uri.rstrip('/')} {suite}\n" for suite in fields.get("Suites", "").split())


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class PrivateApt:
    """apt-get with its own arm64-only configuration, sources, state and cache under ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.options = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64"]
        for key, value in (
            ("Dir::State", folder / "state"),
            ("Dir::State::status", folder / "state" / "status"),
            ("Dir::Cache", folder / "cache"),
            ("Dir::Etc::SourceList", folder / "sources.list"),
            ("Dir::Etc::SourceParts", "-"),
            ("Debug::NoLocking", "1"),  # our own state folder: the host's apt lock is not ours to take
        ):
            self.options += ["-o", f"{key}={value}"]

    def update(self) -> None:
        for sub in ("state/lists/partial", "cache/archives/partial"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "state" / "status").touch()
        lines = [f"deb [arch=arm64] {source} main" for source in host_sources()]
        write_text(self.folder / "sources.list", "\n".join(lines) + "\n")
        self.apt_get("update", "-qq", what="download of the arm64 package lists (apt-get update)")

    def apt_get(self, *args: str, cwd: Path | None = None, what: str) -> str:
        done = subprocess.run(
            [_tool("apt-get"), *self.options, *args], capture_output=True, text=True, cwd=cwd, check=False
        )
        # apt-get update exits 0 when an index cannot be fetched ("W: Failed to fetch"): a lock resolved
        # from stale or missing lists would pin the wrong packages, so that is a failed download too
        errors = [line for line in done.stderr.splitlines() if line.startswith(("E:", "W: Failed to fetch"))]
        if done.returncode != 0 or errors:
            reason = (errors or done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
            raise EdgebenchError(f"{what} failed: {' '.join(reason[3:].split())}")
        return done.stdout

    def resolve(self, names: list[str]) -> list[dict]:
        """Each package's candidate: name, version, file name, URL and the index's sha256."""
        printed = self.apt_get("--print-uris", "download", *names, what="resolving the arm64 packages")
        entries = []
        for line in printed.splitlines():
            url, file, _size, digest = line.split()
            package, version = file.split("_")[:2]
            version = version.replace("%3a", ":")
            entries.append({"package": package, "version": version, "file": file, "url": url.strip("'")})
            entries[-1]["sha256"] = digest.removeprefix("SHA256:")
        return entries


def lock_path(downloads: Path) -> Path:
    """The lock of what this version of edgebench asks for (its package list and wheel pins)."""
    request = json.dumps([DISTRIBUTION, DEBS, wheel_requirements(), WHEEL_TARGET]).encode()
    return downloads / f"lock-{hashlib.sha256(request).hexdigest()[:16]}.json"


def fetch(downloads: Path, log=print) -> dict:
    """The lock, every file it names in ``downloads`` with its sha256 checked (fetched when missing)."""
    path = lock_path(downloads)
    lock = read_json(path, "arm64 lock") if path.is_file() else None
    apt, updated = PrivateApt(downloads / "apt"), lock is None
    if lock is None:
        log(f"resolving {DISTRIBUTION} packages and aarch64 wheels")
        apt.update()
        lock = {
            "distribution": DISTRIBUTION,
            "debs": apt.resolve(DEBS),
            "wheels": _download_wheels(downloads),
        }
    missing = [deb for deb in lock["debs"] if not _intact(downloads / "debs" / deb["file"], deb["sha256"])]
    if missing:
        log(f"downloading {len(missing)} arm64 packages")
        (downloads / "debs").mkdir(parents=True, exist_ok=True)
        if not updated:  # the lists the lock came from may be gone: fetch them again
            apt.update()
        pinned = [f"{deb['package']}={deb['version']}" for deb in missing]
        apt.apt_get("download", "-qq", *pinned, cwd=downloads / "debs", what="downloading the arm64 packages")
    for wheel in lock["wheels"]:
        if not _intact(downloads / "wheels" / wheel["file"], wheel["sha256"]):
            name, version = wheel["file"].split("-")[:2]
            _pip_download([f"{name}=={version}", "--no-deps"], downloads / "wheels")
    for entry in [*lock["debs"], *lock["wheels"]]:
        folder = "debs" if "package" in entry else "wheels"
        if not _intact(downloads / folder / entry["file"], entry["sha256"]):
            raise EdgebenchError(f"download failed: {entry['file']} does not have the sha256 the lock pins")
    write_json(path, lock)
    return lock


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise EdgebenchError(f"{name} not found: the arm64 device is built with Debian's apt and dpkg")
    return found


def _intact(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _pip_download(args: list[str], dest: Path) -> None:
    argv = [sys.executable, "-m", "pip", "download", "--quiet", *WHEEL_TARGET, "-d", str(dest), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        raise EdgebenchError(f"download of the aarch64 wheels failed: {(errors or ['pip failed'])[-1]}")


def _download_wheels(downloads: Path) -> list[dict]:
    """The runtimes' aarch64 wheels and their dependencies: downloaded together so that the lock lists
    exactly the files this resolution picked."""
    (downloads / "wheels").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as fresh:
        _pip_download(wheel_requirements(), Path(fresh))
        wheels = []
        for file in sorted(Path(fresh).glob("*.whl")):
            wheels.append({"file": file.name, "sha256": sha256_file(file)})
            shutil.move(file, downloads / "wheels" / file.name)
    return wheels


def install(lock: dict, downloads: Path, root: Path, log=print) -> None:
    """The lock's packages unpacked into ``root`` and its wheels installed into ``root/site``."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    log(f"unpacking {len(lock['debs'])} packages and {len(lock['wheels'])} wheels into {root}")
    for deb in lock["debs"]:
        done = subprocess.run(
            [_tool("dpkg-deb"), "-x", str(downloads / "debs" / deb["file"]), str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise EdgebenchError(f"cannot unpack {deb['file']}: {done.stderr.strip()}")
    files = [str(downloads / "wheels" / wheel["file"]) for wheel in lock["wheels"]]
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", *WHEEL_TARGET]
    done = subprocess.run([*argv, "--target", str(root / "site"), *files], capture_output=True, text=True)
    if done.returncode != 0:
        raise EdgebenchError(f"cannot install the aarch64 wheels: {done.stderr.strip().splitlines()[-1:]}")
