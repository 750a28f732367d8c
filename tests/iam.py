"""A small IAM policy matcher for the tests of the per-client store policies
(``tests/operator/test_policies.py``, ``tests/test_cluster_data.py``): default deny, Allow
statements only, ``*`` any run of characters and ``?`` any one character — both match ``/``, as in
AWS and MinIO — in actions and resources, ``StringEquals`` on ``s3:prefix``. MinIO's own engine
checks the same policies independently (``tests/operator/minio_policy``)."""

from __future__ import annotations

from fnmatch import fnmatchcase


def allowed(policy: dict, action: str, bucket: str, key: str = "", prefix: str | None = None) -> bool:
    """IAM evaluation for an Allow-only policy: some statement matches action and resource, and
    its ``StringEquals`` condition on ``s3:prefix`` (a ListBucket's) holds."""
    resource = f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        if not any(fnmatchcase(action, a) for a in st["Action"]) or not any(fnmatchcase(resource, r) for r in st["Resource"]):
            continue
        condition = st.get("Condition", {})
        assert set(condition) <= {"StringEquals"} and set(condition.get("StringEquals", {})) <= {"s3:prefix"}
        if "s3:prefix" in condition.get("StringEquals", {}) and prefix not in condition["StringEquals"]["s3:prefix"]:
            continue
        return True
    return False
