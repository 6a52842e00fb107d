# The two entry points the README opens with. Both set everything up first.
.PHONY: setup serve test lint bench

setup:
	@bash scripts/setup.sh

serve: setup
	.venv/bin/pollen serve

test: setup lint
	cd client_web && npm test
	cd client_wasm && CARGO_TARGET_DIR=$${POLLEN_CACHE:-$$HOME/.cache/pollen}/cargo-target cargo test --lib --tests
	# The CPU operations again with the threaded build's row and example splits (rayon, natively).
	cd client_wasm && CARGO_TARGET_DIR=$${POLLEN_CACHE:-$$HOME/.cache/pollen}/cargo-target cargo test --features threads --test cpu_conv --test cpu_linear --test on_pool
	.venv/bin/pytest -ra --durations=25

lint:
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy --cache-dir $${POLLEN_CACHE:-$$HOME/.cache/pollen}/mypy  # kept across clones: 34 s cold, 1 s warm
	.venv/bin/lint-imports --no-cache
	cd client_wasm && cargo fmt --check
	cd client_wasm && CARGO_TARGET_DIR=$${POLLEN_CACHE:-$$HOME/.cache/pollen}/cargo-target cargo clippy --lib --tests --examples --features webgpu -- -D warnings
	cd client_wasm && CARGO_TARGET_DIR=$${POLLEN_CACHE:-$$HOME/.cache/pollen}/cargo-target cargo clippy --lib --tests --features threads -- -D warnings
	$${POLLEN_CACHE:-$$HOME/.cache/pollen}/tools/bin/hadolint Dockerfile
	docker-compose --env-file .env.example config --quiet
	cd client_web && npm run --silent lint

bench: setup
	.venv/bin/python -m bench.round_costs
	.venv/bin/python -m bench.round_costs --model mnist-cnn --rounds 3
	.venv/bin/python -m bench.wasm_speed
	.venv/bin/python -m bench.webgpu_speed
	.venv/bin/python -m bench.scale
	.venv/bin/python -m bench.aggregation
	.venv/bin/python -m bench.encodings
