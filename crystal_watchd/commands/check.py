"""``check`` for a person: a short summary of what ``run`` will do, and warnings for what
would stop or surprise it. (``check --json``, and ``check`` off a terminal, print
``Config.describe()`` instead, for scripts.)

The summary is built from small parts: ``SUMMARY`` (lines above the folder table),
``FOLDER_COLUMNS`` (the table) and ``WARNINGS`` (checks, each giving zero or more lines).
A new line, column or warning is one more entry in one of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..config import HTTP_TOKEN_CREDENTIAL, Config, FolderConfig, mask_url
from ..config.hosts import HostCheck
from ..daemon.folders import may_create_inbox
from ..errors import ConfigError
from ..images import fit as fitting

#: A folder whose single output can cost more than this, with no daily budget, is warned of.
COSTLY_OUTPUT_USD = 1.0


@dataclass
class Context:
    """What the parts look at: the config, the environment, and facts found once."""

    config: Config
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @cached_property
    def key(self) -> tuple[str | None, str | None]:
        """(where the fal key comes from, why there is none)."""
        from ..backends.key import key_source

        try:
            return key_source(self.config.fal, self.environ), None
        except ConfigError as exc:
            return None, "; ".join(p.message for p in exc.problems)

    @cached_property
    def fs_types(self) -> dict[Path, str | None]:
        from ..intake.watcher import filesystem_type

        return {f.inbox: filesystem_type(f.inbox) for f in self.config.folders}


# -- the lines above the table ------------------------------------------------------------


def _config_line(ctx: Context) -> str:
    return f"config:    {ctx.config.path}"


def _backend_line(ctx: Context) -> str:
    if ctx.config.backend == "local":
        return "backend:   local (Pillow on this machine, offline, no key)"
    source, missing = ctx.key
    where = f"key from {source}" if source else "NO KEY (see the warning below)"
    return f"backend:   fal, {ctx.config.fal.endpoint}, {where}"


def _journal_line(ctx: Context) -> str:
    config = ctx.config
    if config.journal:
        return f"journal:   PostgreSQL {mask_url(config.journal)} (shared)"
    return f"journal:   SQLite {config.state_dir / 'journal.sqlite3'}"


def _web_line(ctx: Context) -> str:
    http = ctx.config.http
    if http is None:
        return "web page:  off (http: null)"
    credential = ctx.environ.get("CREDENTIALS_DIRECTORY") and (
        Path(ctx.environ["CREDENTIALS_DIRECTORY"]) / HTTP_TOKEN_CREDENTIAL).is_file()
    guard = "token required" if (http.token or http.token_file or credential) \
        else "no token: loopback only"
    port = "a port picked at start" if http.port == 0 else f"port {http.port}"
    # port 0: the listen address holds with whatever port is picked
    names = [n[:-2] + ":PORT" if n.endswith(":0") else n
             for n in HostCheck.build(http.host, http.port, http.allowed_hosts).shown()]
    proxies = (f"; X-Forwarded-Host believed from {', '.join(http.trusted_proxies)}"
               if http.trusted_proxies else "")
    return (f"web page:  {http.url} ({guard}, {port}); answers to {', '.join(names)} "
            f"(no port: any port){proxies}")


def _budget_line(ctx: Context) -> str:
    daily = ctx.config.budget.daily_usd
    return f"budget:    ${daily:.2f} a day" if daily is not None else "budget:    no daily limit"


SUMMARY: list[Callable[[Context], str]] = [_config_line, _backend_line, _journal_line,
                                           _web_line, _budget_line]


# -- the folder table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    title: str
    value: Callable[[FolderConfig, Context], str]


def _watching(folder: FolderConfig, ctx: Context) -> str:
    kind = ctx.fs_types.get(folder.inbox) or "?"
    mode = "native" if folder.polling is None else f"polling {folder.polling:g} s"
    return f"{mode} ({kind})"


def _scale(folder: FolderConfig, ctx: Context) -> str:
    if folder.fit is None:
        return f"×{folder.scale_factor:g}"
    target = folder.fit
    if target.megapixels is not None:
        return f"fit {target.megapixels:g} MP"
    return f"fit {target.print} @ {target.dpi:g} dpi" if target.print \
        else f"fit {target.long_edge} px"


def fit_line(folder: FolderConfig, config: Config) -> str:
    """What a fit folder makes of a picture, estimated from the target itself."""
    target = folder.fit
    assert target is not None
    megapixels = min(fitting.typical_megapixels(target), folder.max_output_megapixels)
    if target.megapixels is not None:
        what = f"fits each picture to {target.megapixels:g} MP"
    elif target.print:
        what = (f"fits each picture to a {target.print} print at {target.dpi:g} dpi, "
                f"{target.long_edge_px} px on the long edge (≈ {megapixels:.0f} MP")
    else:
        what = (f"fits each picture to {target.long_edge_px} px on the long edge "
                f"(≈ {megapixels:.0f} MP for a 3:2 picture")
    cost = ("nothing paid on the local backend" if config.backend == "local"
            else f"about ${megapixels * config.fal.price_per_megapixel:.2f} a picture")
    what += f", {cost})" if target.megapixels is None else f" ({cost})"
    kept = ("copies one already that large as it is, unpaid" if target.enlarge_only
            else "sends one already that large at ×1")
    return f"  {folder.name}: {what}; {kept}"


def _originals(folder: FolderConfig, ctx: Context) -> str:
    return f"move to {folder.done_dir}" if folder.originals == "move" else folder.originals


FOLDER_COLUMNS: list[Column] = [
    Column("folder", lambda f, ctx: f.name),
    Column("inbox → outbox", lambda f, ctx: f"{f.inbox} → {f.outbox}"),
    Column("scale", _scale),
    Column("creativity", lambda f, ctx: f"{f.creativity:g}"),
    Column("output", lambda f, ctx: f.output_format),
    Column("watching", _watching),
    Column("originals", _originals),
]


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


# -- warnings -----------------------------------------------------------------------------


def _no_key(ctx: Context) -> Iterable[str]:
    source, missing = ctx.key
    if ctx.config.backend == "fal" and source is None:
        yield f"`run` will stop: {missing}"


def _writable(path: Path) -> bool:
    """``path``, or the nearest parent that exists (``run`` creates the rest), is writable."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _folders(ctx: Context) -> Iterable[str]:
    from ..intake.watcher import is_network_fs

    for i, f in enumerate(ctx.config.folders):
        where = f"folders[{i}] ('{f.name}')"
        if not f.inbox.exists():
            then = ("`run` creates it empty" if may_create_inbox(f, ctx.config.path)
                    else "`run` waits for it to appear")
            yield (f"{where}: the inbox {f.inbox} does not exist; {then} "
                   "(is the path right, the share mounted?)")
        elif not os.access(f.inbox, os.R_OK | os.X_OK):
            yield f"{where}: the inbox {f.inbox} cannot be read by this user"
        dirs = [("outbox", f.outbox), ("failed_dir", f.failed_dir)]
        if f.originals == "move":
            dirs.append(("done_dir", f.done_dir))
        if f.originals in ("move", "delete") and f.inbox.exists() \
                and not os.access(f.inbox, os.W_OK):
            yield (f"{where}: originals: {f.originals} needs to change the inbox {f.inbox}, "
                   "which this user cannot write")
        for key, path in dirs:
            if not _writable(path):
                yield f"{where}: {key} {path} cannot be written by this user"
        kind = ctx.fs_types.get(f.inbox)
        if f.polling is None and is_network_fs(kind):
            yield (f"{where}: the inbox is on {kind}, a network/FUSE filesystem, watched "
                   "without polling: files written by other machines raise no change "
                   "event and wait for the rescan; set polling: true (or seconds)")


def _budget(ctx: Context) -> Iterable[str]:
    config = ctx.config
    if config.backend != "fal" or config.budget.daily_usd is not None:
        return
    price = config.fal.price_per_megapixel
    for f in config.folders:
        most = f.max_output_megapixels * price
        if most > COSTLY_OUTPUT_USD:
            yield (f"no budget.daily_usd: folder '{f.name}' can make outputs costing up to "
                   f"${most:.2f} each ({f.max_output_megapixels:g} MP × ${price:g}/MP) and "
                   "nothing limits a day's spend; set budget.daily_usd")
            return


#: Checks whose findings stop ``run`` (the config is valid, but the daemon would not work).
BLOCKERS: list[Callable[[Context], Iterable[str]]] = [_no_key]
#: Checks whose findings are worth knowing; ``run`` still works.
WARNINGS: list[Callable[[Context], Iterable[str]]] = [_folders, _budget]


def blockers(ctx: Context) -> list[str]:
    """What must be fixed before ``run`` works."""
    return [line for check in BLOCKERS for line in check(ctx)]


def warnings(ctx: Context) -> list[str]:
    """What ``run`` would work despite, but a user should know."""
    return [line for check in WARNINGS for line in check(ctx)]


def summary(ctx: Context) -> list[str]:
    lines = [part(ctx) for part in SUMMARY]
    lines.append(f"folders:   {len(ctx.config.folders)}")
    rows = [[c.title for c in FOLDER_COLUMNS]]
    rows += [[c.value(f, ctx) for c in FOLDER_COLUMNS] for f in ctx.config.folders]
    fits = [fit_line(f, ctx.config) for f in ctx.config.folders if f.fit is not None]
    return lines + table(rows) + fits
