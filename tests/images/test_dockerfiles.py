"""The container images, checked without a Docker engine: each Dockerfile parses
(dockerfile-parse), its base is pinned by version, every COPY source exists in the repository
and survives .dockerignore (the Docker SDK's own matcher), it runs as a numeric non-root user,
installs the right extra, and its ENTRYPOINT is a real `p2pk` command."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

from p2p_job.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
P2PK = Path(sys.executable).parent / "p2pk"  # the installed console script
IMAGES = {"worker": "worker", "operator": "operator"}  # image -> the p2pk command it runs

images = pytest.mark.parametrize("image", sorted(IMAGES))


def instructions(image: str) -> list[dict]:
    parser = DockerfileParser(path=str(ROOT / "images" / image / "Dockerfile"))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def values(image: str, instruction: str) -> list[str]:
    return [i["value"] for i in instructions(image) if i["instruction"] == instruction]


def build_context() -> set[str]:
    """Paths Docker sends as the build context (the repository root less .dockerignore)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return set(exclude_paths(str(ROOT), patterns))


@images
def test_parses_into_known_instructions(image):
    kinds = [i["instruction"] for i in instructions(image)]
    assert kinds[0] == "FROM"
    assert set(kinds) <= {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "ENTRYPOINT", "ARG", "LABEL"}
    assert kinds.count("ENTRYPOINT") == 1 and kinds.count("USER") >= 1


@images
def test_base_image_is_pinned_by_version(image):
    for base in values(image, "FROM"):
        ref = base.split()[0]
        name, _, tag = ref.rpartition(":")
        assert name and "/" not in tag, f"{image}: base {ref!r} has no tag"
        assert tag != "latest" and re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: base {ref!r} is not pinned to a full version"


def test_worker_base_carries_the_pinned_torch():
    import torch

    (base,) = values("worker", "FROM")
    pinned = torch.__version__.split("+")[0]  # the CPU twin of the image's CUDA build
    assert base.startswith(f"pytorch/pytorch:{pinned}-cuda"), base
    assert base.endswith("-runtime"), "the worker needs the CUDA runtime only"


@images
def test_copy_sources_exist_and_are_in_the_build_context(image):
    context = build_context()
    copies = values(image, "COPY")
    assert copies
    for value in copies:
        *sources, _dest = [a for a in shlex.split(value) if not a.startswith("--")]
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"{image}: COPY source {source} is not in the repository"
            files = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts] if path.is_dir() else [path]
            assert files, f"{image}: COPY source {source} is empty"
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                assert rel in context, f"{image}: {rel} (COPY {source}) is excluded by .dockerignore"


def test_build_context_leaves_out_local_state():
    context = build_context()
    for path in (".venv", ".git", ".tools", "tests", "charts", "runs"):
        assert not any(p == path or p.startswith(path + "/") for p in context), path


@images
def test_runs_as_a_numeric_non_root_user(image):
    user = values(image, "USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"{image}: USER {user!r} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    # The chart's pods (operator, test hook, and MinIO alike) run as that uid.
    chart_uids = set(re.findall(r"runAsUser: (\d+)", "".join(
        p.read_text() for p in (ROOT / "charts" / "p2pk" / "templates").rglob("*.yaml"))))
    assert chart_uids == {uid}


@images
def test_installs_its_extra_only(image):
    installs = [v for v in values(image, "RUN") if "pip install" in v]
    assert len(installs) == 1
    assert f'".[{image}]"' in installs[0]
    assert "--constraint requirements/constraints.txt" in installs[0]


@images
def test_entrypoint_is_a_p2pk_command(image):
    (entrypoint,) = values(image, "ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form, so signals reach p2pk
    assert argv == ["p2pk", IMAGES[image]]
    if argv[1] not in COMMANDS:
        pytest.skip(f"`p2pk {argv[1]}` is not registered in p2p_job/cli.py yet")
    proc = subprocess.run([str(P2PK), *argv[1:], "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert argv[1] in proc.stdout


def test_worker_user_is_the_uid_the_operator_runs_jobs_as():
    from p2pk_operator.manifests import WORKER_UID

    assert values("worker", "USER")[-1] == f"{WORKER_UID}:{WORKER_UID}"
