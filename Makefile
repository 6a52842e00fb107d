# The two entry points the README opens with. Both set everything up first.
.PHONY: setup serve test lint bench

setup:
	@bash scripts/setup.sh

serve: setup
	.venv/bin/pollen serve

test: setup lint
	.venv/bin/pytest -ra

lint:
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m bench.round_costs
	.venv/bin/python -m bench.round_costs --model mnist-cnn --rounds 3
