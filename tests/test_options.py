"""Run settings from flags, POLLEN_* variables and a config file, in that order of precedence."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from coordinator.options import with_settings
from coordinator.settings import Settings

app = typer.Typer()
seen: list[Settings] = []


@app.command()
@with_settings()
def show(settings: Settings) -> None:
    seen.append(settings)


def run(*args: str, env: dict[str, str] | None = None) -> Settings:
    seen.clear()
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return seen[0]


def test_flags_beat_environment_beat_config_file(tmp_path: Path) -> None:
    config = tmp_path / "pollen.toml"
    config.write_text('rounds = 7\nmodel = "mnist-2nn"\ndp-clip = 1.0\ndp-noise = 0.5\nlocal_epochs = 2\n')
    s = run("--config", str(config), "--rounds", "9", env={"POLLEN_MODEL": "mnist-cnn"})
    assert (s.rounds, s.model, s.dp_clip, s.dp_noise, s.local_epochs) == (9, "mnist-cnn", 1.0, 0.5, 2)


def test_secrets_come_from_the_environment() -> None:
    s = run(env={"POLLEN_JOIN_TOKEN": "j", "POLLEN_ADMIN_TOKEN": "a", "POLLEN_DB": "postgresql://x@h/db"})
    assert (s.join_token, s.admin_token, s.db) == ("j", "a", "postgresql://x@h/db")


def test_unknown_config_keys_and_bad_values_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("roundz = 3\n")
    result = CliRunner().invoke(app, ["--config", str(config)])
    assert result.exit_code != 0 and "roundz" in result.output
    result = CliRunner().invoke(app, ["--strategy", "fedmagic"])
    assert result.exit_code != 0 and "fedmagic" in result.output


def test_a_commands_own_options_keep_their_help_and_short_names_beside_the_settings() -> None:
    from coordinator.cli import app as pollen

    runner = CliRunner()
    simulate = runner.invoke(pollen, ["simulate", "--help"], env={"COLUMNS": "200"})
    assert "Number of client processes." in simulate.output and "--label-column" in simulate.output
    shard = runner.invoke(pollen, ["shard", "--help"], env={"COLUMNS": "200"})
    assert "-o" in shard.output and "Where to write the shard" in shard.output


def test_batch_size_takes_a_number_or_auto() -> None:
    assert run("--batch-size", "32").batch_size == 32
    assert run().batch_size == 10
    s = run("--batch-size", "auto", "--memory-budget-mb", "64")
    assert (s.batch_size, s.memory_budget_mb) == ("auto", 64.0)
    result = CliRunner().invoke(app, ["--batch-size", "lots"])
    assert result.exit_code != 0 and 'positive integer or "auto"' in result.output
