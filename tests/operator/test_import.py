"""The operator image has no torch (nor pandas): importing the operator must not need them."""

from __future__ import annotations

import subprocess
import sys


def test_the_operator_imports_without_torch_or_pandas():
    code = (
        "import sys, p2pk_operator.handlers, p2pk_operator.crd, p2p_job.commands.operator; "
        "from p2p_job.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'imblearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_lists_operator_and_crd():
    out = subprocess.run([sys.executable, "-m", "p2p_job.cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "operator" in out and "crd" in out


def test_operator_pushgateway_flag_defaults_to_the_environment_and_reaches_the_memo(monkeypatch):
    import kopf

    from p2p_job.cli import build_parser

    runs = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: runs.append(kwargs))
    monkeypatch.setenv("P2PK_PUSHGATEWAY", "env.monitoring:9091")
    for argv, expected in ((["-n", "lab"], "env.monitoring:9091"), (["-n", "lab", "--pushgateway", "pg:9091"], "pg:9091")):
        args = build_parser().parse_args(["operator", *argv])
        assert args.func(args) == 0
        assert runs.pop()["memo"].pushgateway == expected
    monkeypatch.delenv("P2PK_PUSHGATEWAY")
    args = build_parser().parse_args(["operator", "-n", "lab"])
    args.func(args)
    assert runs.pop()["memo"].pushgateway is None
