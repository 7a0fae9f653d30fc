"""The lab: several test devices on one machine, each reached over real SSH.

A device is a network namespace with its own address on a bridge, its own mount view of
the install paths, its own hostname, cgroup memory and CPU limits and an sshd. Building
it needs root; ``splitter lab up/down/status`` and the test fixture drive it.
"""

from splitter.lab.lab import Lab, lab_down, lab_status, lab_up
from splitter.lab.spec import LabSpec, parse_size

__all__ = ["Lab", "LabSpec", "lab_down", "lab_status", "lab_up", "parse_size"]
