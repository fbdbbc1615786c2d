"""Rich view of a probe profile (``dvm probe`` on a terminal).

rich is imported inside the functions: the probe package re-exports :func:`render`, and importing
the probe (the server, the engine-check child) should not cost rich's import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

OK, NO, UNKNOWN = "[green]yes[/]", "[red]no[/]", "[yellow]?[/]"
STATUS_STYLE = {"usable": "green", "failed": "red", "unavailable": "dim", "not-verified": "yellow"}


def _yes_no(value: bool | None) -> str:
    return OK if value else (UNKNOWN if value is None else NO)


def _summary(profile: dict) -> Text:
    from rich.text import Text  # noqa: PLC0415 - rich only when rendering

    host, cpu = profile["host"], profile["cpu"]
    container = host["container"]
    lines = [
        f"[bold]{profile['platform_id']}[/]   {host.get('os_release') or host['os']}   kernel {host['kernel']}   "
        f"Python {host['python']}",
        f"CPU  {cpu.get('brand') or 'unknown'}   {cpu.get('physical_cores') or '?'} cores / "
        f"{cpu.get('logical_cores') or '?'} threads ({cpu.get('usable_cores') or '?'} usable)"
        + (f"   {cpu['performance_cores']}P+{cpu['efficiency_cores']}E" if cpu.get("performance_cores") else "")
        + (f"   RAM {host['memory_total_mib'] // 1024} GiB" if host.get("memory_total_mib") else ""),
    ]
    if container.get("detected"):
        lines.append(f"Container  {container['runtime']} ({', '.join(container['evidence'])})")
        if container.get("reason"):
            lines.append(f"[yellow]{container['reason']}[/]")
    if host.get("wsl"):
        lines.append("WSL 2")
    return Text.from_markup("\n".join(lines))


def _cpu_table(profile: dict) -> Table:
    from rich.table import Table  # noqa: PLC0415 - rich only when rendering

    cpu = profile["cpu"]
    table = Table(title=f"CPU features (from {cpu['source']})", title_justify="left", show_header=False, box=None)
    have = [k for k, v in cpu["flags"].items() if v]
    missing = [k for k, v in cpu["flags"].items() if not v]
    table.add_row("[green]has[/]", " ".join(have) or "-")
    table.add_row("[dim]lacks[/]", "[dim]" + (" ".join(missing) or "-") + "[/]")
    blas = profile.get("blas", {})
    found = [f"{k} ({v['path']})" for k, v in blas.items() if isinstance(v, dict) and v.get("available")]
    table.add_row("BLAS", ", ".join(found) or "[dim]none found[/]")
    return table


def _accelerator_table(profile: dict) -> Table:
    from rich.table import Table  # noqa: PLC0415 - rich only when rendering

    table = Table(title="Accelerators", title_justify="left", expand=True)
    table.add_column("backend")
    table.add_column("available")
    table.add_column("details", overflow="fold")
    for name, info in profile["accelerators"].items():
        if info["available"]:
            details = []
            for d in info.get("devices", []):
                extra = [d.get(k) for k in ("type", "compute_capability", "metal", "gfx") if d.get(k)]
                mem = d.get("memory_total_mib") or d.get("memory_mib")
                if mem:
                    extra.append(f"{mem} MiB")
                details.append(f"{d.get('name')} ({', '.join(map(str, extra))})" if extra else str(d.get("name")))
            if info.get("driver_version"):
                details.insert(0, f"driver {info['driver_version']}, CUDA {info.get('cuda_driver_version')}")
            text = "; ".join(details)
            if info.get("note"):
                text += f"\n[yellow]{info['note']}[/]"
        else:
            text = f"[dim]{info.get('reason')}[/]"
        table.add_row(name, _yes_no(info["available"]), text)
    return table


def _engine_table(profile: dict) -> Table:
    from rich.table import Table  # noqa: PLC0415 - rich only when rendering

    table = Table(title="Engines (usable = a test transcription ran)", title_justify="left", expand=True)
    for column in ("engine", "device", "status", "details"):
        table.add_column(column, overflow="fold" if column == "details" else None)
    for name, info in profile["engines"].items():
        label = f"{name} {info.get('version') or ''}".strip()
        if info.get("whisper_cpp_version"):
            label += f"\n[dim]whisper.cpp {info['whisper_cpp_version']}[/]"
        if info.get("ctranslate2_version"):
            label += f"\n[dim]CTranslate2 {info['ctranslate2_version']}[/]"
        for i, (device, entry) in enumerate(info.get("devices", {}).items()):
            status = entry["status"]
            style = STATUS_STYLE.get(status, "")
            details = entry.get("reason") or ""
            if status == "usable":
                ran_on = entry.get("backend") or device
                details = f"{entry['seconds']:.2f} s on {ran_on}" if entry.get("seconds") else "-"
            if entry.get("cached"):
                details += f" [dim](cached {entry.get('checked_at') or ''})[/]"
            table.add_row(label if i == 0 else "", device, f"[{style}]{status}[/]" if style else status, details)
        unused = info.get("cpu_features_unused")
        if unused:
            table.add_row("", "", "", f"[dim]CPU features this build does not use: {' '.join(unused)}[/]")
    return table


def render(profile: dict, console: Console) -> None:
    from rich.console import Group  # noqa: PLC0415 - rich only when rendering
    from rich.panel import Panel  # noqa: PLC0415 - rich only when rendering
    from rich.text import Text  # noqa: PLC0415 - rich only when rendering

    body = Group(_summary(profile), Text(""), _cpu_table(profile), Text(""), _accelerator_table(profile),
                 Text(""), _engine_table(profile))
    title = f"dvm probe  [dim]{profile.get('collected_at', '')}  {profile.get('duration_s') or 0:.1f} s[/]"
    console.print(Panel(body, title=title, title_align="left"))
