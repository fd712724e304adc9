"""Generated gRPC stubs of the kubelet device plugin API (see the api.proto next to them)."""
