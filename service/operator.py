"""The operator's side: review handed-over conversations and close them.

`python -m service.operator --config PATH tickets | show T-00001 | close T-00001 [--note TEXT]`
does from a terminal what the web app's Operator tab does (login required there: the password
comes from the ATTENDANT_OPERATOR_PASSWORD environment variable).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hmac
import os
import sys
from typing import Any, Sequence

from core.cli import add_config_arguments, config_from_args, run_cli
from core.errors import AttendantError

PASSWORD_ENV = "ATTENDANT_OPERATOR_PASSWORD"


class OperatorConsole:
    def __init__(self, store: Any, password: str | None = None):
        self.store = store
        self.password = password if password is not None else os.environ.get(PASSWORD_ENV, "")

    @property
    def enabled(self) -> bool:
        return bool(self.password)

    def check_password(self, attempt: str) -> bool:
        return self.enabled and hmac.compare_digest(str(attempt or "").encode(), self.password.encode())

    def ticket_rows(self, status: str | None = "open") -> list[list[str]]:
        return [[t["ticket_id"], t["status"], dt.datetime.fromtimestamp(t["created_at"]).strftime("%Y-%m-%d %H:%M"),
                 t["reason"], str(len(t["transcript"]))] for t in self.store.tickets(status)]

    def transcript(self, ticket_id: str) -> list[dict[str, str]]:
        for t in self.store.tickets(None):
            if t["ticket_id"] == ticket_id:
                return [{"role": m["role"], "content": m["text"] or " "} for m in t["transcript"]]
        return []

    def close(self, ticket_id: str, note: str = "") -> str:
        session = self.store.close_ticket(ticket_id.strip(), note)
        if session is None:
            return f"No open ticket {ticket_id}."
        return f"Closed {ticket_id}; the customer's chat is back with the assistant."


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.operator", description="Review and close handoff tickets.")
    add_config_arguments(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("tickets", help="list open tickets")
    show = sub.add_parser("show", help="print a ticket's redacted transcript")
    show.add_argument("ticket")
    close = sub.add_parser("close", help="close a ticket and release the conversation")
    close.add_argument("ticket")
    close.add_argument("--note", default="")
    args = p.parse_args(argv)
    from service.assembly import open_store

    console = OperatorConsole(open_store(config_from_args(args)), password="cli")
    if args.cmd == "tickets":
        for row in console.ticket_rows():
            print("  ".join(row))
    elif args.cmd == "show":
        lines = console.transcript(args.ticket)
        if not lines:
            raise AttendantError(f"no ticket {args.ticket}; list them with `python -m service.operator tickets`")
        for m in lines:
            print(f"{m['role']:>9}: {m['content']}")
    else:
        print(console.close(args.ticket, args.note))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
