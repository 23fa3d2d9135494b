"""A config file → the frozen Config: the models check each key, the rules here what spans
several (overlapping folders, hooks naming folders, a token for a page off loopback), and
every problem of both kinds is reported together, in line order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, ConfigProblem
from . import problems as config_problems
from .automation import build_hooks, build_notify, check_hooks, check_notify
from .fit import DEFAULT_PRINT_DPI
from .models import ConfigFile, FolderEntry, FolderSettings
from .paths import HTTP_TOKEN_CREDENTIAL, default_state_dir
from .runtime import (
    BudgetConfig,
    Config,
    FalConfig,
    FolderConfig,
    HttpConfig,
    LogConfig,
    PixelConfig,
    RetryConfig,
)
from .urls import DEFAULT_HTTP_LISTEN, is_loopback, listen
from .yamldoc import Doc, path_in


def parse_config(text: str, file: str | Path) -> Config:
    """Parse config text; raise ConfigError listing every problem."""
    path = Path(file).absolute()
    doc = Doc(str(file))
    data = doc.load(text)
    if data is None and doc.problems:  # unparseable: nothing more to check
        raise ConfigError(doc.problems)
    base = path.parent
    model: ConfigFile | None = None
    try:
        model = ConfigFile.model_validate(data, context={"base": base})
    except ValidationError as exc:
        config_problems.report(doc, exc, ConfigFile)
    # Rules across keys are checked on the file as written, so they show beside any
    # problem the models found.
    raw = data if isinstance(data, dict) else {}
    check_hooks(doc, raw.get("hooks"), _folder_names(raw.get("folders"), base))
    check_notify(doc, raw.get("notify"))
    _check_http(doc, raw.get("http"))
    _check_fit(doc, raw)
    if model is None:
        _check_folders(doc, _folders_alone(raw, base))
        raise ConfigError(_in_order(doc.problems))
    config = Config(
        path=path,
        backend=model.backend,
        concurrency=model.concurrency,
        state_dir=model.state_dir or default_state_dir(),
        log=LogConfig(**dict(model.log)),
        fal=FalConfig(**dict(model.fal)),
        retry=RetryConfig(**dict(model.retry)),
        folders=tuple(_folder(i, f, model.defaults) for i, f in enumerate(model.folders)),
        rescan_interval=model.rescan_interval,
        shutdown_grace=model.shutdown_grace,
        budget=BudgetConfig(**dict(model.budget)),
        pixels=PixelConfig(workers=model.pixels.workers or PixelConfig.workers,
                           memory_mb=model.pixels.memory_mb),
        http=None if model.http is None else HttpConfig(
            *listen(model.http.listen),
            **{k: v for k, v in model.http if k != "listen"}),
        journal=model.journal,
        journal_password_file=model.journal_password_file,
        journal_lease=model.journal_lease,
        hooks=build_hooks(model.hooks),
        hook_attempts=model.hook_attempts,
        notify=build_notify(model.notify),
    )
    _check_folders(doc, config.folders)
    if doc.problems:
        raise ConfigError(_in_order(doc.problems))
    return config


def _in_order(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return sorted(problems, key=lambda p: p.line or 0)


def _folder(i: int, entry: FolderEntry, defaults: FolderSettings) -> FolderConfig:
    """A folder's settings: its own where given, else those of ``defaults:``, else the
    built-in defaults."""
    values = {}
    for key in type(defaults).model_fields:
        given = entry if key in entry.model_fields_set else defaults
        values[key] = getattr(given, key)
    _fitted(values, entry.model_fields_set)
    values["done_dir"] = values["done_dir"] or entry.inbox / "done"
    values["failed_dir"] = values["failed_dir"] or entry.inbox / "failed"
    return FolderConfig(name=entry.name or _default_name(i, entry.inbox), inbox=entry.inbox,
                        outbox=entry.outbox, **values)


def _fitted(values: dict[str, Any], own: set[str]) -> None:
    """``fit`` as a FitTarget. A folder's own ``scale_factor`` replaces an inherited ``fit``
    (and its own ``fit`` an inherited ``scale_factor``); a print target declares its dpi,
    unless the folder sets its own ``dpi`` beside an inherited fit."""
    if "scale_factor" in own and "fit" not in own:
        values["fit"] = None
    fit = values["fit"]
    values["fit"] = fit.target() if fit is not None else None
    if values["fit"] is not None and values["fit"].print is not None \
            and not ("dpi" in own and "fit" not in own):
        values["dpi"] = values["fit"].dpi


def _check_fit(doc: Doc, raw: dict[str, Any]) -> None:
    """``fit`` and ``scale_factor`` both in one mapping say two different things; so do a
    print fit's dpi and another ``dpi`` beside it."""
    mappings = [(("defaults",), raw.get("defaults"))]
    folders = raw.get("folders")
    mappings += [(("folders", i), f) for i, f in enumerate(folders if isinstance(folders, list)
                                                           else ())]
    for path, mapping in mappings:
        if not isinstance(mapping, dict) or mapping.get("fit") is None:
            continue
        if "scale_factor" in mapping:
            doc.problem((*path, "fit"), "set either fit (a size to fit each picture to) or "
                        "scale_factor (a fixed factor), not both")
        fit = mapping["fit"]
        if isinstance(fit, dict) and fit.get("print") is not None and "dpi" in mapping:
            print_dpi = fit.get("dpi", DEFAULT_PRINT_DPI)
            if mapping["dpi"] != print_dpi:
                shown = f"{print_dpi:g}" if isinstance(print_dpi, (int, float)) else print_dpi
                doc.problem((*path, "dpi"), f"the fit's print is made at {shown} dpi and "
                            "the output declares that; leave dpi out or make it the same")


def _folders_alone(raw: dict[str, Any], base: Path) -> tuple[FolderConfig, ...]:
    """The folders when another section has a problem: their overlaps are still worth
    reporting in the same run (nothing when the folders themselves have problems)."""
    try:
        model = ConfigFile.model_validate(
            {"folders": raw.get("folders"), "defaults": raw.get("defaults")},
            context={"base": base})
    except ValidationError:
        return ()
    return tuple(_folder(i, f, model.defaults) for i, f in enumerate(model.folders))


def _default_name(i: int, inbox: Path | None) -> str:
    return inbox.name if inbox else f"folder{i + 1}"


def _folder_names(raw: Any, base: Path) -> set[str]:
    """The folder names of the file as written (for hooks that name folders)."""
    names = set()
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        item = item if isinstance(item, dict) else {}
        inbox = item.get("inbox")
        try:
            path = path_in(base)(inbox) if inbox is not None else None
        except ValueError:
            path = None
        name = item.get("name")
        names.add(name if isinstance(name, str) else _default_name(i, path))
    return names


def _check_http(doc: Doc, raw: Any) -> None:
    """Off loopback the page needs a token: it can retry jobs and lift pauses, and the
    pictures are private."""
    if not isinstance(raw, dict):
        return
    try:
        host, _ = listen(raw.get("listen", DEFAULT_HTTP_LISTEN))
    except ValueError:
        return  # reported by the models
    if not is_loopback(host) and raw.get("token") is None and raw.get("token_file") is None \
            and not _token_credential():
        doc.problem(("http", "listen"),
                    f"listening on {host} (not a loopback address) needs http.token or "
                    "http.token_file: the page can retry jobs and lift pauses, and the "
                    "pictures are private")


def _token_credential() -> bool:
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return bool(creds) and (Path(creds) / HTTP_TOKEN_CREDENTIAL).is_file()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_folders(doc: Doc, folders: tuple[FolderConfig, ...]) -> None:
    """Names unique, no inbox twice, and nothing we write lands where we watch."""
    seen_names: dict[str, int] = {}
    seen_inboxes: dict[Path, int] = {}
    for i, f in enumerate(folders):
        if f.name in seen_names:
            doc.problem(("folders", i, "name"), f"folder name '{f.name}' is used twice "
                        f"(also folders[{seen_names[f.name]}]); set a distinct name")
        seen_names.setdefault(f.name, i)
        if f.inbox in seen_inboxes:
            doc.problem(("folders", i, "inbox"), f"inbox {f.inbox} is watched twice "
                        f"(also folders[{seen_inboxes[f.inbox]}])")
        seen_inboxes.setdefault(f.inbox, i)
        for j, other in enumerate(folders):
            if i != j and f.recursive and other.inbox != f.inbox and _inside(other.inbox, f.inbox) \
                    and not _excluded(f, other.inbox):
                doc.problem(("folders", j, "inbox"),
                            f"lies inside the recursive inbox of folders[{i}] ({f.inbox})")
        for key in ("outbox", "done_dir", "failed_dir"):
            target: Path = getattr(f, key)
            for j, other in enumerate(folders):
                if target == other.inbox:
                    doc.problem(("folders", i, key), f"{target} is the inbox of folders[{j}]")
                elif (other.recursive and _inside(target, other.inbox)
                      and not _excluded(other, target)):
                    doc.problem(("folders", i, key), f"{target} lies inside the recursive inbox "
                                f"of folders[{j}] ({other.inbox}); files written there would be "
                                "picked up again")


def _excluded(folder: FolderConfig, path: Path) -> bool:
    """Whether ``path`` inside ``folder``'s inbox is one of its own never-watched dirs."""
    return any(_inside(path, d) for d in folder.excluded_dirs())
