"""What a cluster's operator lets experiments use: images, ServiceAccounts and Secrets.

Whoever may create a P2PExperiment chooses the image its pods run, their ServiceAccount and the
Secret their store credentials come from. The chart (values ``operator.allowedImages`` and
``operator.allowedServiceAccounts``) passes allowlists to ``p2pk operator`` (``--allowed-image``,
``--allowed-service-account``, or ``$P2PK_ALLOWED_IMAGES`` / ``$P2PK_ALLOWED_SERVICE_ACCOUNTS``,
comma-separated); :meth:`Admission.errors` checks a spec against them, and a spec that asks for
more gets the ``InvalidSpec`` condition naming the field (nothing is created). Empty lists allow
anything, as before.

Secrets: the operator reads only a Secret meant for it — labelled
``p2pk.io/store-credentials: "true"`` (:data:`CREDENTIALS_LABEL`; the chart's MinIO Secret is) —
besides the client Secrets it makes itself. :func:`secret_refusal` says why another is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: The label a Secret must carry for the operator to read it as store credentials.
CREDENTIALS_LABEL = "p2pk.io/store-credentials"


def _listed(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def image_allowed(image: str, patterns: tuple[str, ...]) -> bool:
    """``image`` equals a pattern, or starts with a pattern's text before its final ``*``
    (``registry.example/p2pk/worker:*`` allows every tag of one repository; a ``*`` elsewhere
    is taken literally)."""
    return any(image == p or (p.endswith("*") and image.startswith(p[:-1])) for p in patterns)


@dataclass(frozen=True)
class Admission:
    """Allowlists of ``p2pk operator`` (empty: anything)."""

    images: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, images: list[str] | None, service_accounts: list[str] | None, env=os.environ) -> "Admission":
        """Flags, else the environment (comma-separated)."""
        return cls(tuple(images or ()) or _listed(env.get("P2PK_ALLOWED_IMAGES")),
                   tuple(service_accounts or ()) or _listed(env.get("P2PK_ALLOWED_SERVICE_ACCOUNTS")))

    def errors(self, exp) -> list[tuple[str, str]]:
        """``(field path, message)`` for each field of ``exp`` this operator does not allow."""
        k = exp.spec.kubernetes
        out = []
        if self.images and not image_allowed(k.image, self.images):
            out.append(("spec.kubernetes.image", f"image {k.image!r} is not allowed by this operator; allowed: {', '.join(self.images)}"))
        account = k.service_account_name
        if self.service_accounts and account is not None and account not in self.service_accounts:
            out.append(("spec.kubernetes.serviceAccountName",
                        f"ServiceAccount {account!r} is not allowed by this operator; allowed: {', '.join(self.service_accounts)} (or none)"))
        return out


def secret_refusal(secret: dict, where: str) -> str | None:
    """Why the operator will not read ``secret`` as store credentials, or None."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(CREDENTIALS_LABEL) == "true":
        return None
    return (f"{where} is not meant for the p2pk operator: it reads only Secrets labelled {CREDENTIALS_LABEL}=true "
            f"(kubectl label secret {secret['metadata']['name']} {CREDENTIALS_LABEL}=true, if its keys are for experiments)")
