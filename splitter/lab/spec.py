"""What a lab should look like: device count, memory and CPU limits, link rate."""

from __future__ import annotations

import re
from dataclasses import dataclass

from splitter.errors import SplitterError

_NAME = re.compile(r"^[a-z][a-z0-9]{0,5}$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)(i?B?)?$", re.IGNORECASE)
_RATE = re.compile(r"^\d+(?:\.\d+)?(bit|kbit|mbit|gbit)$", re.IGNORECASE)


@dataclass(frozen=True)
class LabSpec:
    """What to build: how many devices, their limits and the link rate."""

    name: str = "lab"
    devices: int = 3
    memory: tuple[int, ...] = (1 << 30,)
    cpus: tuple[float, ...] = (1.0,)
    link: str | None = None
    subnet_index: int = 0  # 10.231.<index>.0/24

    def memory_of(self, index: int) -> int:
        return self.memory[index] if len(self.memory) > 1 else self.memory[0]

    def cpus_of(self, index: int) -> float:
        return self.cpus[index] if len(self.cpus) > 1 else self.cpus[0]

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise SplitterError(
                f"lab name '{self.name}' is not allowed (network names are short)",
                "use 1-6 lowercase letters or digits, starting with a letter",
            )
        if not 1 <= self.devices <= 32:
            raise SplitterError(f"--devices {self.devices} is out of range", "use 1 to 32")
        for option, values in (("--memory", self.memory), ("--cpus", self.cpus)):
            if len(values) not in (1, self.devices):
                raise SplitterError(
                    f"{option} lists {len(values)} values for {self.devices} devices",
                    "give one value for all devices or one per device (comma-separated)",
                )
        if min(self.memory) < 64 << 20:
            raise SplitterError("--memory below 64M leaves no room for sshd", "use 64M or more")
        if min(self.cpus) <= 0:
            raise SplitterError("--cpus must be positive", "e.g. --cpus 0.5,1,1")
        if self.link and not _RATE.match(self.link):
            raise SplitterError(
                f"--link '{self.link}' is not a tc rate", "use e.g. 100mbit, 1gbit, 500kbit"
            )


def parse_size(text: str) -> int:
    """'512M', '1G', '1.5GiB', '1048576' → bytes."""
    match = _SIZE.match(text.strip())
    if not match:
        raise SplitterError(f"'{text}' is not a memory size", "use e.g. 512M, 1G or 2GiB")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit])
