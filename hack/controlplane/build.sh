#!/usr/bin/env bash
# Builds the real control plane the e2e suite runs against (test dependencies only, never
# shipped): etcd, kube-apiserver, kube-scheduler, kube-controller-manager and kubectl from
# k8s.io/kubernetes (./k8s), and Kueue's manager (./kueue), stripped, into a git-ignored cache.
# A binary is rebuilt only when its module's go.mod/go.sum change (the stamp is their hash), so
# a second run is a no-op. Prints the bin directory on the last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${QUBELET_CONTROLPLANE_CACHE:-$root/.cache/controlplane}"
bin="$cache/bin"
mkdir -p "$bin"
command -v go >/dev/null || { echo "build.sh: go not found on PATH (Go >= 1.26 is needed to build the e2e control plane)" >&2; exit 3; }
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false -trimpath"

build() { # module-dir binary-name package
  local mod="$1" name="$2" pkg="$3"
  local stamp="$bin/.$name.stamp"
  local want
  want="$(cat "$here/$mod/go.mod" "$here/$mod/go.sum" | sha256sum | cut -c1-16)"
  if [ -x "$bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  local t0=$SECONDS
  (cd "$here/$mod" && go build -ldflags='-s -w' -o "$bin/$name.tmp" "$pkg")
  mv -f "$bin/$name.tmp" "$bin/$name"
  echo "$want" >"$stamp"
  echo "built $name in $((SECONDS - t0)) s" >&2
}

build k8s etcd ./etcd
build k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build k8s kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build k8s kubectl k8s.io/kubernetes/cmd/kubectl
build kueue kueue sigs.k8s.io/kueue/cmd/kueue
echo "$bin"
