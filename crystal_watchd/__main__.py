"""The program's entry point (``crystal-watchd`` and ``python -m crystal_watchd``)."""

from __future__ import annotations


def main() -> int:
    """Run the CLI, importing its libraries lean first (see ``lean``)."""
    from .lean import import_without_rich

    import_without_rich()
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
