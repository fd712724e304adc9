"""Generated gRPC stubs of the kubelet plugin APIs (see the api.proto next to them)."""
