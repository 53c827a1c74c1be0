"""`builder devices --cluster`: the boards the cluster's nodes offer, which are leased and to whom."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from rich.console import Console
from rich.markup import escape

from builder.host import cluster


def show(address: str, as_json: bool, console: Console) -> None:
    cluster.connect(address)
    boards = cluster.leases()
    if as_json:
        console.print_json(json.dumps(boards))
        return
    if not boards:
        console.print("no board on the cluster: start a node with `ray start --address HEAD:6379 "
                      "--resources '{\"device:NAME\": 1}'`", soft_wrap=True)
    for b in boards:
        nodes = ", ".join(f"{n['node']} ({n['id'][:8]}{'' if n['alive'] else ', dead'})" for n in b["nodes"])
        if not b["capacity"]:
            state = "[red]gone[/red] (no live node offers it)"
        elif b["held"] >= b["capacity"]:
            who = b["holder"]
            state = "[yellow]leased[/yellow]" + (
                f" by {escape(who['user'])}@{escape(who['host'])} (pid {who['pid']}): {escape(who['recipe'])} / "
                f"{escape(who['target'])} since {_clock(who['since'])}" if who else "")
        else:
            state = "[green]free[/green]"
        console.print(f"{escape(b['device'])}  {escape(b['resource'])}  on {escape(nodes)}: {state}", soft_wrap=True)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S UTC")
