"""``p2pk run exp.yaml``: the experiment on this machine, one worker process per client,
exchanging through a directory store (default ``<out>/store``) or S3 (``--store s3://…``);
then ``results.parquet``, ``summary.txt``/``summary.md``, ``figures/*.png`` and ``run.json`` in
the output folder, as ``p2pk simulate`` writes them. Methods run one after the other. The
workers read the spec as run (``<out>/spec.yaml``: the file with ``--set``/``--rounds``/seed
applied). A worker's fatal error ends the run at once with the cause in one line."""

from __future__ import annotations

import signal
from pathlib import Path

from p2p_job.commands.runs import RunFailed, add_arguments, execute, methods


def register(sub) -> None:
    p = sub.add_parser("run", help="run one worker process per client on this machine (directory store or S3)")
    add_arguments(p)
    p.add_argument("--store", help="s3://bucket/prefix or file:///path (default: file://<out>/store; "
                                   "with --seeds each seed gets <store>/seed-<s>)")
    p.add_argument("--s3-endpoint", help="S3/MinIO endpoint host:port or URL (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve each worker's /metrics from this port on (+1 per client); default 0: not served")
    p.add_argument("--pushgateway", help="host:port of a Prometheus Pushgateway (default: spec.runtime.pushgateway)")
    p.add_argument("--retries", type=int, default=3,
                   help="failures of one worker at the same round before the run fails (default 3; reaching a new round starts the count afresh)")
    p.set_defaults(func=run)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def store_for(args, exp, seed: int | None) -> str | None:
    """The run's store URL: ``--store`` (or ``spec.runtime.store``), per seed in ``seed-<s>``."""
    base = args.store or exp.spec.runtime.store
    if base and seed is not None and args.seeds:
        return base.rstrip("/") + f"/seed-{seed}"
    return base


def run(args) -> int:
    signal.signal(signal.SIGTERM, _interrupt)

    def run_one(exp, run, progress):
        from p2p_job.local import RunSettings, WorkerFailed, open_run_store, preflight, run_local
        from p2p_job.datasets import DataError
        from p2p_job.store import StoreDenied, StoreError, run_prefix

        settings = RunSettings(out=run.out, store=store_for(args, exp, exp.spec.seed if args.seeds else None),
                               s3_endpoint=args.s3_endpoint, metrics_port=args.metrics_port,
                               pushgateway=args.pushgateway, device=args.device, retries=args.retries)

        def on_tick(workers) -> None:
            for w in workers:
                key = (w.method, w.client)
                progress.add(key, f"{w.method}/{w.client}", exp.spec.rounds)
                last = w.last
                if last:
                    note = f" round {last['round']}: {last['eval']} FNR {last['fnr']:.4f} FPR {last['fpr']:.4f}"
                    if w.restarts:
                        note += f" ({w.restarts} restart(s))"
                    if w.waiting:
                        note += f" waiting for the store ({w.waiting['waited']:.0f} s)"
                    progress.update(key, last["round"], f"{w.method}/{w.client}{note}")
                elif w.resumed_from:
                    progress.update(key, w.resumed_from, f"{w.method}/{w.client} resumed after round {w.resumed_from}")

        known = run.previous is not None and run.previous.get("store") == settings.store_url()
        try:
            preflight(exp, run.spec_path, settings)
            if settings.store and not known and not args.resume:
                _claim_store(exp, settings, open_run_store(settings), force=args.force, run_prefix=run_prefix)
            run.record["store"] = settings.store_url()
            return run_local(exp, run.spec_path, settings, methods(args), on_tick, progress.say,
                             on_notes=lambda notes: run.record.update(choices=notes))
        except WorkerFailed as exc:
            raise RunFailed(str(exc)) from None
        except DataError as exc:
            raise RunFailed(f"fatal data: {exc}") from None
        except StoreDenied as exc:
            raise RunFailed(f"fatal store-denied: {exc}") from None
        except StoreError as exc:
            raise RunFailed(f"store {settings.store_url()}: {exc}") from None
        except ValueError as exc:  # a bad store URL
            raise RunFailed(str(exc)) from None
        except _device_error() as exc:  # evaluated only for an error no clause above took
            raise RunFailed(f"fatal device: {exc}") from None

    code = execute(args, "run", run_one)
    if code == 0:
        out = args.out or "results/<experiment>"
        print(f"worker logs in {Path(out) / ('seed-<s>/logs' if args.seeds else 'logs')}")
    return code


def _device_error() -> type[Exception]:
    """``p2p_job.training.DeviceError`` (from the preflight's check of ``cuda``), imported when
    an error is being matched: the runner itself imports no PyTorch (its workers do)."""
    from p2p_job.training import DeviceError

    return DeviceError


def _claim_store(exp, settings, store, *, force: bool, run_prefix) -> None:
    """A store given with ``--store`` (not the folder's own) that already holds this experiment's
    rounds belongs to another run: refuse, unless ``--force`` (delete them first)."""
    from p2p_job.spec import resolved_method_name

    held = [name for name in (resolved_method_name(m, exp.spec.aggregation.rule) for m in exp.spec.methods)
            if store.list(run_prefix(exp.name, name))]
    if not held:
        return
    if force:
        for name in held:
            store.delete_prefix(run_prefix(exp.name, name))
        return
    raise RunFailed(f"store {settings.store_url()} already holds rounds of experiment {exp.name!r} "
                    f"({', '.join(held)}) that this output folder has no record of; add --resume to continue them, "
                    "--force to delete them and start again, or use another store prefix")
