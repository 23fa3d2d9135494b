"""The CLI speaks for itself: every subcommand and argument has words in ``--help``, and
``check`` does not call a config that cannot run "OK"."""

from __future__ import annotations

import argparse

from conftest import cli, write_config

from crystal_watchd.cli import _parser


def _subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _subparsers(sub, f"{prefix}{name} ")


def test_every_subcommand_and_argument_has_a_description():
    """Each subcommand's own ``--help`` opens with a sentence, and every positional
    argument and option says what it is."""
    found = dict(_subparsers(_parser()))
    assert {"run", "once", "check", "status", "retry", "journal export"} <= set(found)
    for name, sub in found.items():
        assert sub.description and sub.description.endswith("."), name
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_check_without_a_key_counts_the_problem_instead_of_saying_ok(tmp_path):
    """On the fal backend with no key anywhere, ``check`` says the config is valid and that
    one problem must be fixed before ``run`` works, not "config OK"."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal")
    env = {"FAL_KEY": "", "CREDENTIALS_DIRECTORY": str(tmp_path / "no-credentials")}
    result = cli("check", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert "config OK" not in result.stderr
    assert "problem: `run` will stop" in result.stderr
    assert "1 problem(s) to fix before `run` works" in result.stderr

    local = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="local")
    result = cli("check", "--config", str(local), env=env)
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stderr
