"""Plan -> compute (cached, in a process pool) -> save data and draw -> summary.json and gallery.

Every figure is finished as soon as its last run is in, so an interrupted invocation still leaves the
figures it completed (and their summary entries) behind, and the next invocation only computes what
is missing.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from types import ModuleType
from typing import Sequence

from paper_figures import report
from paper_figures.cache import Run, RunCache, execute
from paper_figures.registry import FIGURES, Context, load


def _worker_init(threads: int) -> None:
    # Runs in a fresh (spawned) worker before anything imports torch, numba or tqdm.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TQDM_DISABLE"] = "1"  # the workers' own bars would garble the driver's bar


class _Progress:
    """One tqdm bar over the runs to compute; its description names the figures whose runs are computing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, disable=False)

    def describe(self, figures: Sequence[str], label: str = "") -> None:
        if self.bar is not None:
            shown = ", ".join(figures[:2]) + (f" +{len(figures) - 2}" if len(figures) > 2 else "")
            self.bar.set_description(shown or "drawing")
            self.bar.set_postfix_str(label, refresh=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def produce(names: Sequence[str], ctx: Context, out: Path, *, jobs: int = 1, progress: bool = True,
            command: str = "python -m paper_figures") -> int:
    """Produce figures ``names`` into ``out``; returns 0 if every one was drawn, else 1."""
    start = time.perf_counter()
    out = Path(out)
    cache = RunCache(out / "runs")
    modules: dict[str, ModuleType] = {name: load(name) for name in names}
    plans: dict[str, list[Run]] = {name: list(module.plan(ctx)) for name, module in modules.items()}

    summary = report.load_summary(out)
    if summary.get("scale") not in (None, ctx.scale):
        summary = {"figures": {}}  # never mix scales in one gallery
    summary.update(scale=ctx.scale, command=command)

    unique: dict[str, Run] = {}
    needed_by: dict[str, list[str]] = {}
    for name, runs in plans.items():
        for r in runs:
            unique.setdefault(r.key, r)
            needed_by.setdefault(r.key, []).append(name)
    todo = sorted((r for k, r in unique.items() if not cache.has(r)), key=lambda r: -r.cost)
    reused = len(unique) - len(todo)
    pending = {name: {r.key for r in runs if not cache.has(r)} for name, runs in plans.items()}
    failed: dict[str, str] = {}
    bar = _Progress(len(todo), progress)

    def figures_of(runs: Sequence[Run]) -> list[str]:
        keys = {r.key for r in runs}
        return [n for n in names if any(k in keys for k in needed_by_figure[n])]

    needed_by_figure = {name: {r.key for r in runs} for name, runs in plans.items()}

    def finish_ready() -> None:
        for name in names:
            if not pending[name] and name not in finished:
                finished.add(name)
                _finish(name, modules[name], ctx, plans[name], cache, out, summary, failed.get(name))
                _write_outputs(out, summary, command)

    def record(key: str, error: str | None) -> None:
        for name in needed_by[key]:
            pending[name].discard(key)
            if error is not None and name not in failed:
                failed[name] = error
        bar.advance()
        finish_ready()

    finished: set[str] = set()
    finish_ready()  # figures whose runs are all cached are drawn straight away
    try:
        if jobs == 1 or len(todo) <= 1:
            for r in todo:
                bar.describe(figures_of([r]), r.label)
                record(r.key, _guarded(lambda: execute(r, str(cache.root)), r))
        else:
            _compute_pool(todo, cache, jobs, bar, figures_of, record)
    finally:
        bar.close()
    finish_ready()

    elapsed = time.perf_counter() - start
    drawn = [n for n in names if "error" not in summary["figures"].get(n, {"error": ""})]
    summary["invocation"] = {"figures": list(names), "seconds": round(elapsed, 1), "jobs": jobs,
                             "computed_runs": len(todo), "reused_runs": reused,
                             "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if reused == 0 and set(names) == set(FIGURES) and len(drawn) == len(names):
        summary["clean_cache_run"] = summary["invocation"]  # the runtime of the whole set from scratch
    _write_outputs(out, summary, command)
    print(f"{len(drawn)}/{len(names)} figures in {elapsed:.1f} s (computed {len(todo)} runs, "
          f"reused {reused} from the cache) -> {out / 'FIGURES.md'}", file=sys.stderr)
    for name in names:
        if name not in drawn:
            print(f"  {name}: {summary['figures'][name]['error']}", file=sys.stderr)
    return 0 if len(drawn) == len(names) else 1


def _guarded(fn, r: Run) -> str | None:
    try:
        fn()
    except Exception as err:  # a failed run fails its figures, not the whole command
        return _describe(err, r)
    return None


def _describe(err: BaseException, r: Run) -> str:
    first = (str(err).strip().splitlines() or [""])[0]
    return f"run {r.label or r.fn} failed: {type(err).__name__}: {first}"


def _compute_pool(todo: list[Run], cache: RunCache, jobs: int, bar: _Progress, figures_of, record) -> None:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    futures: dict[Future, Run] = {}
    try:
        for r in todo:
            futures[pool.submit(execute, r, str(cache.root))] = r
        while futures:
            in_flight = [r for f, r in futures.items() if f.running()]
            bar.describe(figures_of(in_flight), f"{len(futures)} runs left: " + ", ".join(r.label for r in in_flight))
            done, _ = wait(futures, return_when=FIRST_COMPLETED, timeout=5.0)
            for future in done:
                r = futures.pop(future)
                err = future.exception()
                record(r.key, None if err is None else _describe(err, r))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _finish(name: str, module: ModuleType, ctx: Context, runs: list[Run], cache: RunCache, out: Path,
            summary: dict, error: str | None) -> None:
    entry: dict = {"title": getattr(module, "TITLE", name)}
    if error is not None:
        entry["error"] = error
        summary["figures"][name] = entry
        return
    start = time.perf_counter()
    try:
        results = [cache.load(r) for r in runs]
        made = module.finish(ctx, runs, results, out)
    except Exception as err:  # drawing bugs are reported per figure, with the traceback in a log
        with open(out / "errors.log", "a") as log:
            log.write(f"--- {name}\n{traceback.format_exc()}\n")
        entry["error"] = f"drawing failed: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''} (traceback in errors.log)"
        summary["figures"][name] = entry
        return
    compute = sum(float(res.get("_seconds") or 0.0) for res in results)
    entry.update(numbers=made["numbers"], caption=made["caption"], runs=len(runs),
                 seconds=round(compute + time.perf_counter() - start, 1),
                 files=[f"{name}.png", f"{name}.pdf"] + list(made.get("data", [])))
    summary["figures"][name] = entry


def _write_outputs(out: Path, summary: dict, command: str) -> None:
    report.write_summary(out, summary)
    report.write_gallery(out / "FIGURES.md", out, summary, command)
    from paper_figures.driver import DEFAULT_OUT

    if out.resolve() == DEFAULT_OUT.resolve():  # the committed gallery, beside the package
        report.write_gallery(DEFAULT_OUT.parent / "README.md", out, summary, command)
