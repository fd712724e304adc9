"""Test doubles for what cannot run in a unit test (kubelet, API server), speaking the real wire contracts."""
