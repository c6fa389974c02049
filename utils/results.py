"""Results roots: the files a recipe or benchmark leaves behind, read the same way from a directory or a zip of one.

    root = results_root("results/mini_cald_run.zip")       # or "output/mini_cald": a directory
    train, dev = read_metrics_jsonl(root / "runs/asr/std/metrics.jsonl")
    pack(Path("output/mini_cald"), "results.zip", ("info.json", "runs/*/*/metrics.jsonl"))

A zip is read through ``zipfile.Path``, which offers pathlib's ``/``, ``is_file``, ``is_dir`` and ``read_text``,
so the reports (scripts/mini_cald_report.py, bench/ddp_scaling.py --report) need no second code path, and their
messages name a file inside an archive as ``archive.zip/runs/...``.
"""
import json
import logging
import sys
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)


def results_root(path) -> Path | zipfile.Path:
    """``path`` as a directory, or the root of the zip it names (a root already opened is returned as it is)."""
    if isinstance(path, zipfile.Path):
        return path
    path = Path(path)
    if not path.is_file():
        return path
    if not zipfile.is_zipfile(path):
        raise SystemExit(f"error: {path} is neither a results directory nor a zip of one")
    return zipfile.Path(path)


def pack(root: Path, archive, patterns) -> int:
    """Write the files under ``root`` matching ``patterns`` (root.glob's) to the zip ``archive``; their count."""
    names = sorted({path.relative_to(root).as_posix() for pattern in patterns for path in root.glob(pattern)
                    if path.is_file()})
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zip_file:
        for name in names:
            zip_file.write(root / name, arcname=name)
    logger.info("packed %d files of %s into %s", len(names), root, archive)
    return len(names)


def read_metrics_jsonl(path, dev_key: str = "dev/cer") -> tuple[dict, dict]:
    """({step: training row}, {step: dev row holding ``dev_key``}) of a run's metrics.jsonl, each in step order.

    A resumed run logs again the steps after the checkpoint it resumed from: the last row of a step wins. A torn
    last line (a run killed mid-write) is skipped with a warning; a missing file gives two empty dicts."""
    train, dev = {}, {}
    if not path.is_file():
        return train, dev
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            print(f"warning: {path}:{number}: not JSON, skipped", file=sys.stderr)
            continue
        if "loss" in row:
            train[int(row["step"])] = row
        if dev_key in row:
            dev[int(row["step"])] = row
    return dict(sorted(train.items())), dict(sorted(dev.items()))
