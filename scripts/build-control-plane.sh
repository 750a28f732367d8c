#!/usr/bin/env bash
# Build a real Kubernetes control plane for the test suite, once per version:
#   kube-apiserver and kube-controller-manager from the k8s.io/kubernetes Go module (as a library,
#   with every k8s.io/* staging module pinned by `replace` to the matching v0.X.Y release and the
#   version stamped by ldflags, so that the server reports vX.Y.Z and helm accepts the chart's
#   kubeVersion), and etcd from Debian's etcd-server package.
# Output: .tools/control-plane/<version>/bin/{kube-apiserver,kube-controller-manager,etcd}
# (ignored by git). A finished build is reused; a cold build takes 15-25 minutes on 2 cores.
# Prints the bin folder on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION=${P2PK_K8S_VERSION:-v1.37.2}
root="$PWD/.tools/control-plane/$K8S_VERSION"
bin="$root/bin"
if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] && [ -x "$bin/etcd" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin" "$root/src"

if [ ! -x "$bin/etcd" ]; then
  if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Debian's etcd-server" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
    $SUDO systemctl stop etcd >/dev/null 2>&1 || true
  fi
  ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$bin/etcd"
fi

staging_version="v0.${K8S_VERSION#v1.}"
cd "$root/src"
if [ ! -f go.mod ]; then
  echo "resolving k8s.io/kubernetes@$K8S_VERSION and its staging modules ($staging_version)" >&2
  go mod init p2pk.io/control-plane >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # Every `k8s.io/x => ./staging/src/k8s.io/x` replace of the kubernetes module becomes a pin to
  # the published release of that staging module.
  python3 - "$gomod" "$staging_version" > replaces.txt <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
for name in sorted(set(re.findall(r"(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", text))):
    print(f"{name}={name}@{sys.argv[2]}")
EOF
  while IFS= read -r r; do go mod edit -replace "$r"; done < replaces.txt
  go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  go_line=$(grep -E '^go [0-9]' "$gomod" | head -1 | cut -d' ' -f2)
  go mod edit -go "$go_line"
fi
echo "fetching modules" >&2
go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" >&2

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ldflags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000"
done
for cmd in kube-apiserver kube-controller-manager; do
  if [ ! -x "$bin/$cmd" ]; then
    echo "building $cmd $K8S_VERSION (cold: 10+ minutes on 2 cores)" >&2
    start=$(date +%s)
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$bin/$cmd.tmp" "$bin/$cmd"
    echo "built $cmd in $(( $(date +%s) - start )) s" >&2
  fi
done
echo "$bin"
