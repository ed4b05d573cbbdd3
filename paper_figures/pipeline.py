"""Plan -> compute (cached, in a process pool) -> save data and draw -> summary.json and gallery.

Every figure is finished as soon as its last run is in, so an interrupted invocation still leaves the
figures it completed (and their summary entries) behind, and the next invocation only computes what
is missing.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from paper_figures import report
from paper_figures.cache import TRAINING, Run, RunCache, execute
from paper_figures.figures.common import seed_of
from paper_figures.registry import FIGURES, Context, load

OnDone = Callable[[Run, "str | None"], None]


class Production:
    """One invocation of the figures command: the figures ``names`` at ``ctx``'s scale, into ``out``."""

    def __init__(self, names: Sequence[str], ctx: Context, out: Path, command: str) -> None:
        self.names, self.ctx, self.out, self.command = list(names), ctx, Path(out), command
        self.cache = RunCache(self.out / "runs")
        self.modules: dict[str, ModuleType] = {name: load(name) for name in self.names}
        self.plans: dict[str, list[Run]] = {name: [_sharded(r, ctx.nproc) for r in m.plan(ctx)]
                                            for name, m in self.modules.items()}
        self.summary = report.load_summary(self.out)
        if self.summary.get("scale") not in (None, ctx.scale):
            self.summary = {"figures": {}}  # never mix scales in one gallery
        self.summary.update(scale=ctx.scale, command=command)
        self.problems = {r.key: self.cache.problem(r) for runs in self.plans.values() for r in runs}
        self.pending = {name: {r.key for r in runs if self.problems[r.key] is not None}
                        for name, runs in self.plans.items()}
        self.failed: dict[str, str] = {}
        self.finished: set[str] = set()

    def run(self, *, jobs: int = 1, progress: bool = True) -> int:
        """Compute what the cache lacks, draw every figure; 0 if all were drawn, 1 otherwise."""
        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        unique = {r.key: r for runs in self.plans.values() for r in runs}
        todo = sorted((r for r in unique.values() if self.problems[r.key] is not None), key=lambda r: -r.cost)
        for run in todo:
            if self.problems[run.key] != "missing":
                print(f"recomputing run {run.label or run.fn}: {self.problems[run.key]}", file=sys.stderr)
        self.finish_ready()  # figures whose runs are all cached are drawn straight away
        bar = _Progress(len(todo), progress, self.figures_of)
        try:
            if jobs == 1 or len(todo) <= 1:
                _compute_here(todo, self.cache, bar, self.on_done)
            else:
                _compute_pool(todo, self.cache, jobs, bar, self.on_done)
        finally:
            bar.close()
        self.finish_ready()
        return self.close(time.perf_counter() - start, jobs, computed=len(todo), reused=len(unique) - len(todo))

    def figures_of(self, runs: Sequence[Run]) -> list[str]:
        """The figures that need any of ``runs`` (for the progress bar)."""
        keys = {r.key for r in runs}
        return [name for name in self.names if any(r.key in keys for r in self.plans[name])]

    def on_done(self, run: Run, error: str | None) -> None:
        """A run finished (``error`` None) or failed: update what is pending and finish ready figures."""
        for name in self.names:
            if run.key in self.pending[name]:
                self.pending[name].discard(run.key)
                if error is not None:
                    self.failed.setdefault(name, error)
        self.finish_ready()

    def finish_ready(self) -> None:
        """Save data and draw every figure whose runs are all in, and rewrite summary.json and the gallery."""
        for name in self.names:
            if not self.pending[name] and name not in self.finished:
                self.finished.add(name)
                self.summary["figures"][name] = self.finish(name)
                self.write_outputs()

    def finish(self, name: str) -> dict:
        """The summary entry of figure ``name``: its numbers and caption, or the error that stopped it (one
        line naming the figure, and the run whose result could not be used)."""
        module = self.modules[name]
        entry: dict = {"title": getattr(module, "TITLE", name)}
        if name in self.failed:
            return {**entry, "error": f"figure {name}: {self.failed[name]}"}
        start = time.perf_counter()
        reading: Run | None = None
        try:
            results = []
            for reading in self.plans[name]:
                results.append(self.cache.load(reading))
            reading = None
            made = module.finish(self.ctx, self.plans[name], results, self.out)
        except Exception as err:  # drawing bugs are reported per figure, with the traceback in a log
            with open(self.out / "errors.log", "a") as log:
                log.write(f"--- {name}\n{traceback.format_exc()}\n")
            if reading is not None:  # load's KeyError names the run and what is wrong with its result
                cause = (err.args[0] if isinstance(err, KeyError) and err.args
                         else f"run {reading.label or reading.fn}: {_first_line(err)}")
                return {**entry, "error": f"figure {name}: {cause}"}
            return {**entry, "error": f"figure {name}: drawing failed: {_first_line(err)} (traceback in errors.log)"}
        compute = sum(float(res.get("_seconds") or 0.0) for res in results)
        cpu = [res.get("_cpu_seconds") for res in results]
        return {**entry, "numbers": made["numbers"], "caption": made["caption"], "runs": len(results),
                "seeds": sorted({seed_of(r.config) for r in self.plans[name]} - {None}),
                "seconds": round(compute + time.perf_counter() - start, 1),
                "cpu_seconds": round(sum(cpu), 1) if None not in cpu else None,  # of its runs, shared ones included
                "files": [f"{name}.png", f"{name}.pdf"] + list(made.get("data", []))}

    def write_outputs(self) -> None:
        report.write_summary(self.out, self.summary)
        report.write_gallery(self.out / report.GALLERY, self.out, self.summary, self.command)

    def close(self, seconds: float, jobs: int, *, computed: int, reused: int) -> int:
        """Record the invocation (and the machine it ran on) in summary.json, print the outcome; 0 if every
        figure was drawn."""
        drawn = [n for n in self.names if "error" not in self.summary["figures"].get(n, {"error": ""})]
        unique = {r.key: r for runs in self.plans.values() for r in runs}
        cpu = [self.cache.load(r).get("_cpu_seconds") for r in unique.values()
               if self.problems[r.key] is not None and self.cache.has(r)]
        self.summary["invocation"] = {"figures": self.names, "seconds": round(seconds, 1), "jobs": jobs,
                                      "computed_runs": computed, "reused_runs": reused,
                                      "cpu_seconds_of_computed_runs": round(sum(c for c in cpu if c), 1),
                                      "environment": report.environment(jobs, [
                                          r.config["threads"] for r in unique.values() if "threads" in r.config]),
                                      "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        if reused == 0 and set(self.names) == set(FIGURES) and len(drawn) == len(self.names):
            self.summary["clean_cache_run"] = self.summary["invocation"]  # the whole set from scratch
        self.write_outputs()
        print(f"{len(drawn)}/{len(self.names)} figures in {seconds:.1f} s (computed {computed} runs, "
              f"reused {reused} from the cache) -> {self.out / report.GALLERY}", file=sys.stderr)
        for name in self.names:
            if name not in drawn:
                print(f"  {self.summary['figures'][name]['error']}", file=sys.stderr)  # it names the figure
        return 0 if len(drawn) == len(self.names) else 1


def _sharded(run: Run, nproc: int) -> Run:
    """A training run over ``nproc`` processes (its own cache entry: the reductions change round-off)."""
    if nproc == 1 or not run.fn.endswith(TRAINING):
        return run
    return Run(run.fn, {**run.config, "nproc": nproc}, label=f"{run.label} x{nproc}", cost=run.cost / nproc)


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def _describe(err: BaseException, run: Run) -> str:
    return f"run {run.label or run.fn} failed: {_first_line(err)}"


class _Progress:
    """One tqdm bar over the runs to compute; its description names the figures whose runs are computing."""

    def __init__(self, total: int, enabled: bool, figures_of: Callable[[Sequence[Run]], list[str]]) -> None:
        self.figures_of = figures_of
        self.bar = None
        if enabled and total:
            from aeos_base.progress import progress

            self.bar = progress(total, unit="runs")  # a tqdm bar on a terminal, whole lines in a log file

    def describe(self, running: Sequence[Run], label: str) -> None:
        if self.bar is not None:
            figures = self.figures_of(running)
            shown = ", ".join(figures[:2]) + (f" +{len(figures) - 2}" if len(figures) > 2 else "")
            self.bar.set_description(shown or "drawing")
            self.bar.set_postfix_str(label, refresh=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _compute_here(todo: Sequence[Run], cache: RunCache, bar: _Progress, on_done: OnDone) -> None:
    """Compute the runs one after the other in this process."""
    for run in todo:
        bar.describe([run], run.label)
        try:
            execute(run, str(cache.root))
            error = None
        except Exception as err:  # a failed run fails its figures, not the whole command
            error = _describe(err, run)
        bar.advance()
        on_done(run, error)


def _worker_init(threads: int, driver: int) -> None:
    # Runs in a fresh (spawned) worker before anything imports torch, numba or tqdm.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TQDM_DISABLE"] = "1"  # the workers' own bars would garble the driver's bar
    threading.Thread(target=_exit_with, args=(driver,), daemon=True).start()


def _exit_with(driver: int) -> None:
    """Stop this worker when the driver process is gone (killed, even by SIGKILL): its runs would only
    keep computing into the cache and then wait forever for someone to collect them."""
    while os.getppid() == driver:
        time.sleep(1.0)
    os._exit(1)


def _compute_pool(todo: Sequence[Run], cache: RunCache, jobs: int, bar: _Progress, on_done: OnDone) -> None:
    """Compute the runs in ``jobs`` spawned processes, longest first, reporting each as it finishes."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads, os.getpid()))
    futures: dict[Future, Run] = {}
    try:
        for run in todo:
            futures[pool.submit(execute, run, str(cache.root))] = run
        while futures:
            running = [r for f, r in futures.items() if f.running()]
            bar.describe(running, f"{len(futures)} runs left: " + ", ".join(r.label for r in running))
            done, _ = wait(futures, return_when=FIRST_COMPLETED, timeout=5.0)
            for future in done:
                run = futures.pop(future)
                err = future.exception()
                bar.advance()
                on_done(run, None if err is None else _describe(err, run))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
