"""The device CLI (a bundle's ``infer.py``): classify images with one runtime, ``--selftest``, or ``--bench``.

    python infer.py IMAGE... [--top-k K] [--json] [--model PATH] [--threads N]
    python infer.py --selftest     # model sha256 + bundled samples give their recorded top-1; exit 1 if not
    python infer.py --bench [--threads 1,2] [--out RESULT.json]   # measure the model on this device

Exit codes: 0 ok, 1 self-test mismatch, 2 bad input (missing image, corrupt or tampered model), one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .base import InferenceError, open_runner
from .bundle import MODEL_JSON, Bundle, check_classes, selftest
from .contract import Contract
from .cpuflags import ALLOW_FLAG
from .images import classify, format_results, load_images


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other bad input
        self.exit(2, f"error: {message}\n")


def _parser(bundle_dir: Path) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "infer.py",
        description="Classify images with the bundled model (no TensorFlow needed), or --selftest it.",
    )
    parser.add_argument(
        "images", nargs="*", help="image files of any size or mode (resized to the model's input)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image [3]")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--model", help="run this model file instead of the bundle's (no sha256 check)")
    parser.add_argument(
        "--threads",
        type=_thread_counts,
        help="runtime threads [model.json's: those its latency was measured with; else the runtime's]; "
        "with --bench a comma list (1,2)",
    )
    parser.add_argument(
        "--selftest",
        action="store_true",
        help="check the model and the bundled samples; show host vs target CPU",
    )
    _bench_arguments(parser)
    parser.add_argument(
        ALLOW_FLAG,
        action="store_true",
        help="run even where this CPU lacks a flag the model needs (model.json cpu.requires): one warning",
    )
    parser.add_argument(
        "--bundle", default=str(bundle_dir), help="bundle folder holding model.json [the folder of infer.py]"
    )
    return parser


def _thread_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes thread counts, comma-separated (got '{text}')") from None
    if not counts or min(counts) < 1 or max(counts) > 1024:
        raise argparse.ArgumentTypeError(f"thread counts lie in 1..1024 (got '{text}')")
    return counts


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    bench = parser.add_argument_group("device bench (--bench)")
    bench.add_argument(
        "--bench",
        action="store_true",
        help="measure the model here: top-1 on the bundled evaluation set, batch-1 latency (p50/p90/p99), "
        "throughput, load time, first inference, peak RSS, and this device's fingerprint",
    )
    bench.add_argument("--rounds", type=int, default=3, help="timing rounds, each a fresh load [3]")
    bench.add_argument("--min-samples", type=int, default=1000, help="batch-1 samples per round [1000]")
    bench.add_argument("--time-cap", type=float, default=4.0, help="seconds of batch-1 timing per round [4]")
    bench.add_argument("--out", help="write the result (JSON) to this file; --json prints it instead")


def model_runner(bundle_dir, model: str | None, threads: int | None):
    """(contract, runner) for the bundle's model, or for ``model`` in its place: another file keeps the
    bundle's contract and measured thread count (a folder without model.json: the CIFAR-10 contract)."""
    if not model:
        bundle = Bundle(bundle_dir)
        return bundle.contract, bundle.runner(threads)
    bundle = Bundle(bundle_dir) if (Path(bundle_dir) / MODEL_JSON).is_file() else None
    contract = bundle.contract if bundle else Contract.cifar10()
    threads = threads or (bundle.threads if bundle else None)
    return contract, open_runner(model, threads=threads, contract=contract, untrusted=True)


class CpuMismatch(InferenceError):
    """This CPU lacks a flag the bundle's model needs (bad input: exit 2)."""


def check_cpu(bundle: Bundle, allow: bool) -> None:
    """Refuse (one line, exit 2) where this CPU lacks a flag the model needs; ``allow``: warn and go on."""
    problem = bundle.cpu_mismatch()
    if problem and not allow:
        raise CpuMismatch(f"{problem} ({ALLOW_FLAG} runs it anyway)")
    if problem:
        print(f"warning: {problem}; going on ({ALLOW_FLAG})", file=sys.stderr)


def main(argv=None, bundle_dir: str | Path | None = None) -> int:
    default_dir = Path(bundle_dir) if bundle_dir else Path(sys.argv[0] if sys.argv else ".").resolve().parent
    parser = _parser(default_dir)
    args = parser.parse_args(argv)
    if sum((args.selftest, bool(args.images), args.bench)) != 1:
        parser.error("give image files, --selftest or --bench (one of them)")
    if args.threads and len(args.threads) > 1 and not args.bench:
        parser.error("--threads takes one count here (a list only with --bench)")
    threads = args.threads[0] if args.threads and not args.bench else None
    try:
        if not args.model:  # another model file's needs are not the bundle's
            check_cpu(Bundle(args.bundle), args.allow_cpu_mismatch)
        if args.bench:
            if args.model:
                parser.error("--bench measures the bundle's own model; drop --model")
            from .device_bench import bench_main

            return bench_main(Bundle(args.bundle), args)
        if args.selftest:
            if args.model:
                parser.error("--selftest checks the bundle's own model; drop --model")
            mismatches, lines = selftest(Bundle(args.bundle), threads, args.allow_cpu_mismatch)
            print("\n".join(lines))
            return 1 if mismatches else 0
        return _classify(parser, args, threads)
    except InferenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # e.g. an unreadable model file
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _classify(parser, args, threads: int | None) -> int:
    contract, runner = model_runner(args.bundle, args.model, threads)
    class_names = contract.classes
    batch = load_images(args.images, contract.size, contract.channels)
    if not 1 <= args.top_k <= len(class_names):
        parser.error(f"--top-k must be between 1 and {len(class_names)} (got {args.top_k})")
    with runner:
        probs = runner.infer(batch)
    check_classes(probs, class_names, len(batch))
    results = classify(args.images, probs, args.top_k, class_names)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0
