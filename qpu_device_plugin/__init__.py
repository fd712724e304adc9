"""qpu_device_plugin."""
