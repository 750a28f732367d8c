"""What a worker writes on its own disk: only the scratch folder a Kubernetes pod gives it.

Worker pods run with ``readOnlyRootFilesystem`` and one writable emptyDir at ``/tmp``, with
``HOME``, ``TMPDIR``, ``XDG_CACHE_HOME``, ``MPLCONFIGDIR`` and ``TORCH_HOME`` pointed into it
(``p2pk_operator.manifests.SCRATCH_ENV``). Here a real ``p2pk worker`` process runs a whole
experiment with that environment (the scratch folder in a temporary directory) under a Python
audit hook that records every file opened for writing and every directory made, renamed or
removed; everything it wrote must lie in the scratch folder or the store. (A directory store
stands in for S3 here; on Kubernetes the store is S3 and nothing of it touches the disk.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pk_operator.manifests import SCRATCH_DIR, SCRATCH_ENV

#: Runs ``p2pk worker`` with an audit hook; the records go to the file named by argv[1].
AUDITED_WORKER = r"""
import json, os, sys
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE)
        if writes and isinstance(path, (str, bytes, os.PathLike)):
            record(event, path)
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.replace", "os.symlink", "os.truncate"):
        for path in args[:2]:
            if isinstance(path, (str, bytes, os.PathLike)):
                record(event, path)

def record(event, path):  # one JSON line at once: the worker ends with os._exit, no atexit runs
    os.write(out, (json.dumps([event, os.path.abspath(os.fsdecode(path))]) + "\n").encode())

sys.addaudithook(hook)
from p2p_job.cli import main
sys.exit(main(["worker"]))
"""


@pytest.mark.slow
def test_a_worker_writes_only_to_its_scratch_folder_and_the_store(tmp_path, tiny_spec):
    spec = tiny_spec("writes", n_clients=2, rounds=2, methods=[{"rebalancing": "ksmote", "aggregation": "local"}])
    scratch, store = tmp_path / "scratch", tmp_path / "store"
    scratch.mkdir()
    env = {k: v.replace(SCRATCH_DIR, str(scratch), 1) for k, v in SCRATCH_ENV.items()}
    env.update(P2PK_SPEC=str(spec), P2PK_CLIENT="client-a", P2PK_STORE=store.as_uri(), P2PK_METRICS_PORT="0",
               P2PK_TERMINATION_LOG=str(scratch / "termination-log"), OMP_NUM_THREADS="1",
               PATH=os.environ["PATH"], PYTHONPATH=os.pathsep.join(sys.path))
    records = tmp_path / "writes.json"
    done = subprocess.run([sys.executable, "-c", AUDITED_WORKER, str(records)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = [json.loads(line) for line in records.read_text().splitlines()]
    assert any(path.startswith(str(store)) for _, path in written)  # the hook saw the worker's own writes
    elsewhere = sorted({(event, path) for event, path in written
                        if not (Path(path).is_relative_to(scratch) or Path(path).is_relative_to(store) or path == os.devnull)})
    assert elsewhere == [], f"the worker wrote outside its scratch folder and the store: {elsewhere[:10]}"
