# The single entry points; see README.md.
.PHONY: test lint unit demo tools bench-tools

# Everything CI runs: install what is missing, lint, start the real servers,
# run unit and integration tests, stop the servers.
test:
	bash scripts/test.sh

# Lint only (gofmt, go vet, staticcheck).
lint:
	bash scripts/lint.sh

# Unit tests only, no servers (integration tests skip with a message).
unit:
	go test ./...

# The main job: a backup and a verified restore of a sample image into a
# local file repository (README).
demo:
	bash scripts/demo.sh

tools:
	bash scripts/tools.sh

# The peers the benchmarks in bench/ compare with (restic, GNU time).
bench-tools:
	bash scripts/bench-tools.sh
