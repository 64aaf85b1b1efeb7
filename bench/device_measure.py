"""Timing on a device: a ``Measurer`` whose rounds run on a device (``edgebench.devices``) instead of in a
worker here. ``edgebench tune --device`` times its candidates with it, so the winner is the device's fastest.

Each task's model file (with its sidecars), the runtime package and the images are shipped once; every round
is then ``python -m edgebench_runtime.device_bench task.json`` there — the device bench's own child
(``edgebench.runtime.device_bench._time_round``: ``timing.time_fresh`` in a fresh process), the same code as
bench's workers here. Accuracy stays on this machine (the same predictions on any CPU that runs the file:
checked by ``bench --device``)."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgebench.bench.measure import Measurer, MeasureTask
from edgebench.devices import Device, DeviceError, DeviceTimeout, last_line
from edgebench.errors import ArtifactError
from edgebench.fileio import sha256_file
from edgebench.runtime import artifact_files
from edgebench.runtime.timing import clamp_batches

# the name edgebench.runtime gets where it is shipped (a bundle's infer.py imports it)
RUNTIME_PACKAGE = "edgebench_runtime"
# a candidate that ran past --device-timeout while the device still answers (tune times it again on a rerun)
DEVICE_TIMEOUT = "device-timeout"


def copy_runtime_package(dest: Path) -> Path:
    """``dest/edgebench_runtime``: the runtime package verbatim (one implementation on both sides)."""
    import edgebench.runtime

    src, skip = Path(edgebench.runtime.__file__).parent, shutil.ignore_patterns("__pycache__", "*.pyc")
    return Path(shutil.copytree(src, dest / RUNTIME_PACKAGE, ignore=skip))


_FINGERPRINT = (
    "import json; from edgebench_runtime.device_info import fingerprint; print(json.dumps(fingerprint()))"
)


class DeviceMeasurer(Measurer):
    def __init__(self, *args, device: Device, python: str, timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.device, self.python, self.timeout_s = device, device.python or python, timeout_s
        self.root = ".cache/edgebench/device-timing" if not device.local else tempfile.mkdtemp()
        self._shipped: dict[str, str] = {}

    def _ship(self, task: MeasureTask) -> str:
        """The folder there holding ``task``'s file, the runtime package and the images (shipped once)."""
        key = f"{task.name}-{sha256_file(task.path)[:12]}"
        if key not in self._shipped:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / key
                copy_runtime_package(folder)
                for path in artifact_files(task.path, task.runtime):
                    shutil.copyfile(path, folder / path.name)
                shutil.copyfile(self.images_path, folder / "images.npy")
                self.device.put(folder, f"{self.root}/{key}", self.timeout_s)
            self._shipped[key] = f"{self.root}/{key}"
        return self._shipped[key]

    def fingerprint(self, task: MeasureTask) -> dict:
        """The device's fingerprint (its Python, CPU, flags), from the folder shipped for ``task``."""
        done = self.device.run([self.python, "-c", _FINGERPRINT], self.timeout_s, cwd=self._ship(task))
        if done.returncode != 0:
            raise DeviceError(f"{self.device.url}: {last_line(done.stderr)}")
        return json.loads(done.stdout)

    def time_once(self, task: MeasureTask, threads: int, first_round: bool = True):
        remote = self._ship(task)
        fixed = task.fixed_batch
        batches = [fixed] if fixed else clamp_batches(self.batch_sizes, task.max_batch)
        spec = {"runtime": task.runtime, "path": task.path.name, "threads": threads, "options": task.options}
        order = {
            "spec": spec,
            "images": "images.npy",
            "settings": self.s.to_dict(),
            "fixed": task.fixed_batch,
        }
        order |= {"batches": batches if threads in self.throughput_threads else [], "overhead": first_round}
        with tempfile.TemporaryFile() as fh:
            fh.write(json.dumps(order).encode())
            fh.seek(0)
            self.device.run(["sh", "-c", "cat > task.json"], self.timeout_s, stdin=fh, cwd=remote)
        command = [self.python, "-m", f"{RUNTIME_PACKAGE}.device_bench", "task.json"]
        try:
            done = self.device.run(command, self.timeout_s, cwd=remote)
        except DeviceTimeout as exc:  # ran too long: this candidate's own failure, unless the device is gone
            raise self.device.timed_out(exc, task.name, self.timeout_s, DEVICE_TIMEOUT) from None
        if done.returncode != 0:
            raise ArtifactError("device-error", f"{self.device.url}: {task.name}: {last_line(done.stderr)}")
        result = self.device.get_json(f"{remote}/result.json", self.timeout_s, task.name)
        try:
            samples = np.load(
                io.BytesIO(self.device.get(f"{remote}/samples.npy", self.timeout_s)), allow_pickle=False
            )
        except (ValueError, OSError, EOFError) as exc:
            raise DeviceError(
                f"{self.device.url}: {task.name}: the samples are not an array ({exc})"
            ) from None
        if (
            not isinstance(samples, np.ndarray)
            or samples.ndim != 1
            or samples.dtype.kind not in "iu"
            or not len(samples)
        ):
            raise ArtifactError(
                "device-error", f"{self.device.url}: {task.name}: its samples are not timings"
            )
        return result, samples
