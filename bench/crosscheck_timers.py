"""The cross-check's timers: each its own process, kept warm (``Served``) or run once (``litert_benchmark``).
All but edgebench's own worker are functions of ``edgebench.runtime.bare`` run as a module: numpy and the one
runtime, nothing of edgebench's stages."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.runtime import bare
from edgebench.runtime.bare import WARMUP

_TIMERS = bare.__name__  # run as a module: a fresh process per timer


class Served:
    """A timer process kept warm: ``block(k)`` returns the durations (ns) of k timed calls."""

    def __init__(self, cmd: list[str], log: Path, result: Path | None = None, env: dict | None = None):
        self.log, self.result = log, result  # result: where edgebench's worker writes its one-line error
        with open(log, "w") as err:  # a file, not a pipe: a chatty runtime cannot fill it and stall
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env
            )
        self.info = json.loads(self._reply("READY"))

    def _reply(self, tag: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return line.split(" ", 1)[1]
        self.proc.wait()
        if self.result and self.result.is_file():
            error = json.loads(self.result.read_text()).get("error")
            if error:
                raise EdgebenchError(error["message"])
        tail = self.log.read_text().strip().splitlines()[-1:] or [f"exit code {self.proc.returncode}"]
        raise EdgebenchError(f"timer died: {tail[0]}")

    def block(self, k: int) -> list[int]:
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        return json.loads(self._reply("BLOCK"))

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _timer(name: str, path: Path, threads: int, tensor: Path, log: Path) -> Served:
    return Served([sys.executable, "-m", _TIMERS, name, str(path), str(threads), str(tensor)], log)


def bare_loop(runtime: str, path: Path, threads: int, tensor: Path, log: Path) -> Served:
    return _timer(runtime, path, threads, tensor, log)


def polygraphy_loop(path: Path, threads: int, tensor: Path, log: Path) -> Served:
    import importlib.util

    if importlib.util.find_spec("polygraphy") is None:
        raise EdgebenchError("polygraphy not installed (pip install polygraphy)")
    return _timer("polygraphy", path, threads, tensor, log)


def edgebench_loop(spec, image: Path, workdir: Path, log: Path) -> Served:
    """edgebench's own timing worker on the same file (``serve`` task: batch 1, no throughput)."""
    from edgebench.bench.isolation import worker_command
    from edgebench.runtime.latency_stats import LatencySettings

    out = workdir / ("serve-" + Path(spec.path).name.replace(".", "_"))
    cmd, env = worker_command("serve", spec, image, out, settings=LatencySettings().to_dict())
    return Served(cmd, log, out.with_suffix(".json"), env)


def litert_benchmark(path: Path, threads: int, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        args = ["--model", str(path), "--num_runs", str(n), "--warmup_runs", str(WARMUP)]
        args += ["--num_threads", str(threads), "--result_json", str(out)]
        proc = subprocess.run(
            [sys.executable, "-m", _TIMERS, "litert-benchmark", *args],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no result"]
            return {"error": tail[0]}
        data = json.loads(out.read_text())
    avg = next((v for k, v in _flatten(data) if "avg" in k.lower() and "ms" in k.lower()), None)
    return {"avg_ms": avg, "raw": data} if avg is not None else {"error": f"no average in {sorted(data)}"}


def _flatten(d, prefix=""):
    for k, v in d.items() if isinstance(d, dict) else []:
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, int | float):
            yield f"{prefix}{k}", float(v)
