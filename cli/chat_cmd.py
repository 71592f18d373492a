"""``tessera chat``: an interactive design session in the terminal (the engine is tessera.agents.chat).

The planner proposes a spec, the user edits or approves it, the session runs (progress on stderr), and
follow-ups ("show the five most stable", "why was ID rejected", "more like ID", "export the hits as POSCAR")
are answered from the store. Replies go to stdout; "quit", "exit" or end of input ends the chat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from tessera.cli.common import app, out_console


def render_reply(reply: Any) -> None:  # noqa: ANN401 - a tessera.agents.chat.ChatReply
    """Print a reply on stdout: its lines, its table (Rich), the lines after it."""
    from rich.table import Table

    for line in reply.lines:
        out_console.print(line, highlight=False, soft_wrap=True, markup=False)
    if reply.table is not None:
        t = reply.table
        table = Table(title=t.title, title_justify="left", caption=t.caption, caption_justify="left")
        for col in t.columns:
            table.add_column(col, overflow="fold")
        for row in t.rows:
            table.add_row(*row)
        out_console.print(table)
    for line in reply.after:
        out_console.print(line, highlight=False, soft_wrap=True, markup=False)


@app.command("chat")
def chat_command(
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user "
                                                              "data dir)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the chat's design sessions (default: runs/chat)"),
    planner: str = typer.Option("auto", "--planner", help="auto (LLM if configured, else offline), llm or offline"),
    steps: int = typer.Option(0, "--steps", min=0, help="reverse sampling steps (0: configs/sampler.yaml)"),
) -> None:
    """Chat a design session: state a goal, edit or approve the proposed spec, run it, ask about the results."""
    from tessera.agents.chat import ChatSession
    from tessera.agents.planner.select import make_planner
    from tessera.agents.session import SessionOptions
    from tessera.cli.session_render import SessionProgress
    from tessera.tools.errors import InputError

    if planner not in ("auto", "llm", "offline"):
        raise InputError(f"--planner {planner}: choose auto, llm or offline")
    work = out if out is not None else Path("runs") / "chat"
    if work.exists() and not work.is_dir():
        raise InputError(f"--out {work} is an existing file")
    chat = ChatSession(work=work, store=store, planner=make_planner(backend=planner),
                       options=SessionOptions(steps=steps))
    out_console.print(chat.greeting(), highlight=False, soft_wrap=True, markup=False)
    while True:
        try:
            line = out_console.input("> ")
        except EOFError:
            out_console.print()
            break
        # A fresh progress display per line: it is live (on stderr) only while a session runs.
        with SessionProgress() as progress:
            chat.hooks = progress.hooks()
            reply = chat.handle(line)
        render_reply(reply)
        if reply.done:
            break
