# The two commands of the README: `make demo` (the main job on the embedded default) and
# `make test` (the whole test suite). Both install what they need first.
.PHONY: deps demo test install lint bench docs deb completions scale

deps:
	./tools/install-deps.sh

demo: deps
	cargo build
	./target/debug/provhost check scripts stdlib
	./target/debug/provhost demo

test: deps
	cargo test --no-fail-fast

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

# The Debian package target/debian/provhost_VERSION-1_ARCH.deb (release build): binary,
# scripts, stdlib, systemd unit, /etc/provhost/provhost.toml, completions, docs
# (docs/install.md). Installs cargo-deb first when it is missing.
deb:
	command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
	cargo build --release --locked
	$(MAKE) completions BIN=./target/release/provhost OUT=target/release/completions
	cargo deb --locked --no-build

# Shell completions for bash, zsh and fish into $(OUT).
BIN ?= ./target/debug/provhost
OUT ?= target/completions
completions:
	mkdir -p $(OUT)
	$(BIN) completions bash > $(OUT)/provhost
	$(BIN) completions zsh > $(OUT)/_provhost
	$(BIN) completions fish > $(OUT)/provhost.fish

# `provhost` on PATH: installs the binary into ~/.cargo/bin (cargo's usual bin folder).
install:
	cargo install --locked --path .

bench:
	./tools/install-deps.sh --bench
	cargo run --release --example bench_host
	cargo run --release --example bench_daemon

docs:
	cargo run --quiet -- docs --out docs/script-api.md

# Scale out (issue 16, docs/galera.md, docs/BENCHMARKS.md): the Galera and many-node tests at
# full size, then the pickup and one-node benchmarks against the local MariaDB.
scale: deps
	PROVHOST_GALERA_N=2000 cargo test --release --test galera -- --nocapture --test-threads=1
	PROVHOST_MANY_NODES_N=1000 cargo test --release --test many_nodes -- --nocapture --test-threads=1
	cargo run --release --example bench_pickup -- --nodes 10 --samples 20 --modes 0,250,1000 --idle-secs 15 --background 0
	mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS provhost_bench_daemon; CREATE DATABASE provhost_bench_daemon CHARACTER SET utf8mb4"
	cargo run --release --example bench_daemon -- --n 10000 --load-seconds 3 --perl 0 --hold 30 --url mysql://root@127.0.0.1:3306/provhost_bench_daemon
	mysql -uroot -h127.0.0.1 -e "DROP DATABASE provhost_bench_daemon"
	cargo run --release --example bench_daemon -- --n 10000 --load-seconds 3 --perl 0 --hold 30
