"""The `helm uninstall` pre-delete hook's script (charts/p2pk/files/delete_experiments.py),
driven with a scripted cluster and a fake clock: no cluster, no sleeping. (On a real control
plane: tests/cluster/test_chart_on_cluster.py, helm uninstall.)"""

from __future__ import annotations

import importlib.util

from helmchart import CHART

spec = importlib.util.spec_from_file_location("delete_experiments", CHART / "files" / "delete_experiments.py")
delete_experiments = importlib.util.module_from_spec(spec)
spec.loader.exec_module(delete_experiments)


class Cluster:
    """Experiments that go ``finalize_after`` polls after their deletion (the operator's work)."""

    def __init__(self, names: list[str], finalize_after: dict[str, int | None]):
        self.present = list(names)
        self.finalize_after = finalize_after
        self.deleted: dict[str, int] = {}
        self.now = 0.0

    def names(self) -> list[str]:
        for name, polls in list(self.deleted.items()):
            needed = self.finalize_after.get(name, 0)
            if needed is not None and polls >= needed and name in self.present:
                self.present.remove(name)
            self.deleted[name] = polls + 1
        return list(self.present)

    def delete(self, name: str) -> None:
        self.deleted[name] = 0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(cluster: Cluster, timeout: float = 10):
    return delete_experiments.delete_and_wait(cluster.names, cluster.delete, timeout, sleep=cluster.sleep,
                                              clock=lambda: cluster.now, poll=1.0)


def test_every_experiment_is_deleted_and_waited_for():
    cluster = Cluster(["a", "b"], {"a": 1, "b": 3})
    assert run(cluster) == (["a", "b"], [])
    assert cluster.present == [] and cluster.now == 3.0


def test_one_kept_by_its_finalizer_is_named_at_the_deadline():
    cluster = Cluster(["a", "stuck"], {"a": 0, "stuck": None})
    assert run(cluster, timeout=5) == (["a", "stuck"], ["stuck"])
    assert cluster.now == 5.0


def test_nothing_to_delete_returns_at_once():
    cluster = Cluster([], {})
    assert run(cluster) == ([], []) and cluster.now == 0.0


def test_experiments_are_keyed_by_namespace_and_name():
    cluster = Cluster([("lab", "a"), ("team", "a")], {("lab", "a"): 0, ("team", "a"): 2})
    assert run(cluster) == ([("lab", "a"), ("team", "a")], [])
