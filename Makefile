# gatehouse: build, test, demo, bench.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PREFIX   ?= /usr/local

.PHONY: all build test vet fmt-check fuzz demo bench integration install clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/gatehouse ./cmd/gatehouse

# test: formatting, vet, a bounded fuzz run, then every test with the race detector.
test: fmt-check vet fuzz
	$(GO) test -race -shuffle=on -timeout 20m ./...

# fuzz: each fuzz target for FUZZTIME (the HTTP head parser and the
# chunked decoder), new inputs found on top of the seed corpus.
FUZZTIME ?= 10s
FUZZ_TARGETS := ./protocols/https:FuzzRequestHead ./protocols/https:FuzzChunked
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# demo: gatehouse in front of its built-in demo back-ends (examples/demo.yaml).
demo: build
	./bin/gatehouse demo

# bench: gatehouse side by side with HAProxy and nginx, in one run per
# protocol family: plain TCP, SMTP, POP3/IMAP, HTTPS, TLS handshakes.
bench: build
	bash bench/l4.sh
	bash bench/smtp.sh
	bash bench/mail.sh
	bash bench/https.sh
	bash bench/tls.sh

# integration: the tests that drive real Debian peers (Postfix, Dovecot,
# swaks, sslscan…); they also run in `make test`.
integration:
	$(GO) test -race -run Integration -timeout 20m ./...

# install: the binary, the systemd unit and a user to run it as.
install: build
	install -D -m 0755 bin/gatehouse $(DESTDIR)$(PREFIX)/bin/gatehouse
	install -D -m 0644 examples/systemd/gatehouse.service $(DESTDIR)/etc/systemd/system/gatehouse.service
	@if [ -z "$(DESTDIR)" ] && ! id gatehouse >/dev/null 2>&1; then \
		useradd --system --home /var/lib/gatehouse --shell /usr/sbin/nologin gatehouse; fi
	@echo "installed; put your configuration in /etc/gatehouse/gatehouse.yaml, then: systemctl enable --now gatehouse"

clean:
	rm -rf bin .gatehouse-demo
