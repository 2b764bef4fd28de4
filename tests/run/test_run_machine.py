"""The ``machine`` field of a run's record: where it ran, for the report's line on a sweep."""
import os
import socket

from src.run.records import machine


def test_machine_names_the_host_the_cpu_and_its_cores():
    text = machine()
    host, rest = text.split(": ", 1)
    assert host == socket.gethostname() and rest.split(", ")[1] == f"{os.cpu_count()} cores"
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    assert model is None or rest.startswith(model + ",")
