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

# Release versions stamped into the binaries as the upstream release builds do (-X), so that
# `kubectl version`, discovery's /version and Kueue's log report v1.37.x / v0.17.x, not a dummy
# "v0.0.0-master". Read from the go.mod files (the one place the versions live).
k8s_version="$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/k8s/go.mod")"
kueue_version="$(grep -oE 'sigs\.k8s\.io/kueue v[^ ]+' "$here/kueue/go.mod" | head -1 | cut -d' ' -f2)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitCommit=$k8s_version -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
kueue_ldflags="-X sigs.k8s.io/kueue/pkg/version.GitVersion=$kueue_version -X sigs.k8s.io/kueue/pkg/version.GitCommit=$kueue_version"

build() { # module-dir binary-name package [extra ldflags]
  local mod="$1" name="$2" pkg="$3" extra="${4:-}"
  local stamp="$bin/.$name.stamp"
  local want
  want="$( (cat "$here/$mod/go.mod" "$here/$mod/go.sum"; echo "$extra") | sha256sum | cut -c1-16)"
  if [ -x "$bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  local t0=$SECONDS
  (cd "$here/$mod" && go build -ldflags="-s -w $extra" -o "$bin/$name.tmp" "$pkg")
  mv -f "$bin/$name.tmp" "$bin/$name"
  echo "$want" >"$stamp"
  echo "built $name in $((SECONDS - t0)) s" >&2
}

build k8s etcd ./etcd
build k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build k8s kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
build k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build k8s kubectl k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
build kueue kueue sigs.k8s.io/kueue/cmd/kueue "$kueue_ldflags"
echo "$bin"
