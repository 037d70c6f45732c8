.DEFAULT_GOAL := help
GOLANGCI_LINT ?= go run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

.PHONY: help test lint bench lockbench workerbench fleetbench demo chaos soak

help:       ## Show targets
	@awk -F ':.*## ' '/^[a-z\/-]+:.*## /{printf "%-12s %s\n",$$1,$$2}' $(MAKEFILE_LIST)
test:       ## Tests with the race detector (start their own redis-server), then the bench module's
	go test -race ./...
	cd bench && go test -race ./...
lint:       ## golangci-lint on both modules, then go mod tidy must change nothing
	$(GOLANGCI_LINT) run ./...
	cd bench && $(GOLANGCI_LINT) run ./...
	go mod tidy && go -C bench mod tidy
	git diff --exit-code go.mod go.sum bench/go.mod bench/go.sum
bench:      ## Benchmarks, 6 runs, for benchstat
	go test -run='^$$' -bench=. -count=6 ./... | tee bench.txt
lockbench:  ## Lock benchmark against a fenced floor, a baseline, redsync and redislock (about 6 min; bench/ module)
	go run ./bench/cmd/lockbench
workerbench: ## Worker benchmark: bare asynq, the guard, the full chain, redsync and redislock guards over seven scenarios (about 7 min)
	go run ./bench/cmd/workerbench
fleetbench: ## Worker fleet of 1, 2, 4 processes on one redis-server and a 3-master cluster: tasks/s, p99, CPU per task, memory per order (about 8 min)
	go run ./bench/cmd/fleetbench
chaos:      ## Fault suite: 3 worker processes under SIGKILL, SIGSTOP, network faults and Redis crashes and wipes, 3 seeded runs per fault kind, then a table (about 20 min; SEED=n repeats a seed)
	CHAOS_LONG=true CHAOS_SEED=$(SEED) go test -race -count=1 -timeout 45m -run '^TestChaos$$' -v ./chaos/
soak:       ## Soak: 3 workers under steady load for 10 min (SOAK_DURATION=2m shortens it); goroutines, heap, connections and lock keys must stay flat
	SOAK=true SOAK_DURATION=$(SOAK_DURATION) CHAOS_SEED=$(SEED) go test -race -count=1 -timeout 60m -run '^TestSoak$$' -v ./chaos/
demo:       ## The demo on embedded Redis
	go run ./cmd/turnstile demo
