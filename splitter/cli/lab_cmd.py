"""`splitter lab up|down|status`: test devices on this machine, reached over real SSH."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from splitter.cli.app import app, console, fail
from splitter.errors import SplitterError

lab_app = typer.Typer(help="Build and remove a lab of test devices on this machine (root).")
app.add_typer(lab_app, name="lab")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@lab_app.command("up")
def up(
    devices: int = typer.Option(3, "--devices", help="How many devices."),
    memory: str = typer.Option("1G", "--memory", help="Memory limit, one or per device: 512M,1G"),
    cpus: str = typer.Option("1", "--cpus", help="CPU quota, one or per device: 0.5,1,1"),
    link: str | None = typer.Option(None, "--link", help="Rate limit each link, e.g. 100mbit."),
    name: str = typer.Option("lab", "--name", help="Lab name (1-6 letters/digits)."),
) -> None:
    """Build the lab and print the path of its Ansible inventory."""
    from splitter.lab import LabSpec, lab_up
    from splitter.lab.spec import parse_size

    try:
        spec = LabSpec(
            name=name,
            devices=devices,
            memory=tuple(parse_size(m) for m in _split(memory)),
            cpus=tuple(_cpus(c) for c in _split(cpus)),
            link=link,
        )
        with console.status(f"building lab '{name}' ({devices} devices)"):
            lab = lab_up(spec)
    except SplitterError as error:
        fail(error)
        return
    _print_devices(name)
    console.print(f"[green]✓[/] lab '{name}' is up; inventory: [bold]{lab.inventory}[/]")
    console.print(f"next: `splitter facts -i {lab.inventory}`; remove it with `splitter lab down`")


def _cpus(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SplitterError(f"--cpus value '{text}' is not a number", "e.g. 0.5,1,1") from None


@lab_app.command("down")
def down(name: str = typer.Option("lab", "--name", help="Lab name.")) -> None:
    """Remove every process, namespace, link, cgroup, mount and key the lab made."""
    from splitter.lab import lab_down

    try:
        removed = lab_down(name)
    except SplitterError as error:
        fail(error)
        return
    what = ", ".join(removed) if removed else "nothing was left"
    console.print(f"[green]✓[/] lab '{name}' is down ({what})")


@lab_app.command("status")
def status(
    name: str = typer.Option("lab", "--name", help="Lab name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the lab's devices and whether each answers on SSH."""
    from splitter.lab import lab_status

    state = lab_status(name)
    if as_json:
        console.print_json(json.dumps(state))
        return
    if not state["devices"]:
        console.print(f"lab '{name}' is not up; build it with `splitter lab up`")
        return
    _print_devices(name)


def _print_devices(name: str) -> None:
    from splitter.lab import lab_status

    state = lab_status(name)
    table = Table(title=f"lab '{name}'")
    for column in ("device", "address", "memory", "cpus", "sshd pid", "ssh"):
        table.add_column(column)
    for device in state["devices"]:
        table.add_row(
            device["name"],
            device["address"],
            f"{device['memory_bytes'] / 2**20:.0f} MiB",
            f"{device['cpus']:g}",
            str(device["sshd_pid"]),
            "[green]up[/]" if device["ssh"] else "[red]down[/]",
        )
    console.print(table)
